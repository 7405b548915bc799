//! The demo's data: the reference schema and about 100 000 realistic orders with planted stuck
//! and lost ones, so that every shipped rule has something to find from the first evaluation.
//!
//! Orders are generated in SQL inside the shop database (`generate_series` plus a hash of the
//! order number as the random source, so a run is reproducible and takes seconds), then the MES
//! mirror is copied over in batches. Every timestamp is relative to the shop database's `now()`.

use std::time::Duration;

use rand::Rng;
use rand::seq::IndexedRandom;
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

/// The Shop DB reference schema (`examples/schema/shop.sql`).
pub const SHOP_SCHEMA: &str = include_str!("../../examples/schema/shop.sql");
/// The MES DB reference schema (`examples/schema/mes.sql`).
pub const MES_SCHEMA: &str = include_str!("../../examples/schema/mes.sql");

/// The order statuses in lifecycle order; MES knows an order from index 2 (SUBMITTED) on.
pub(crate) const STATUSES: [&str; 10] = [
    "INITIATED",
    "FILE_UPLOADED",
    "SUBMITTED",
    "PRICE_CALCULATED",
    "MANUFACTURING_APPROVED",
    "MANUFACTURING_STARTED",
    "MANUFACTURING_COMPLETED",
    "PACKAGING",
    "SHIPPED",
    "CLOSED",
];

/// Order types with their share of orders and a typical price in roubles.
pub(crate) const ORDER_TYPES: [(&str, f64, f64); 6] = [
    ("ring", 0.35, 25_000.0),
    ("earrings", 0.20, 18_000.0),
    ("pendant", 0.18, 15_000.0),
    ("bracelet", 0.12, 30_000.0),
    ("necklace", 0.10, 40_000.0),
    ("brooch", 0.05, 12_000.0),
];

/// Number of MES operators; `operator_id` is drawn from 1..=OPERATORS.
pub(crate) const OPERATORS: i32 = 40;

// Fake personal data. It exists so that tests can prove none of it reaches alerts, metrics or
// logs; every address is at example.com.
const FEMALE_NAMES: [&str; 16] = [
    "Anna",
    "Maria",
    "Elena",
    "Olga",
    "Natalia",
    "Irina",
    "Svetlana",
    "Tatiana",
    "Ekaterina",
    "Yulia",
    "Daria",
    "Anastasia",
    "Polina",
    "Ksenia",
    "Sofia",
    "Vera",
];
const MALE_NAMES: [&str; 16] = [
    "Alexander",
    "Dmitry",
    "Sergey",
    "Andrey",
    "Alexey",
    "Maxim",
    "Ivan",
    "Mikhail",
    "Nikolai",
    "Pavel",
    "Artem",
    "Egor",
    "Roman",
    "Oleg",
    "Kirill",
    "Denis",
];
/// Male forms; the female form adds "a" (Ivanov → Ivanova).
const SURNAMES: [&str; 24] = [
    "Ivanov",
    "Petrov",
    "Smirnov",
    "Kuznetsov",
    "Popov",
    "Vasiliev",
    "Sokolov",
    "Mikhailov",
    "Novikov",
    "Fedorov",
    "Morozov",
    "Volkov",
    "Alekseev",
    "Lebedev",
    "Semenov",
    "Egorov",
    "Pavlov",
    "Kozlov",
    "Stepanov",
    "Nikolaev",
    "Orlov",
    "Makarov",
    "Nikitin",
    "Zakharov",
];
const STREETS: [&str; 10] = [
    "Tverskaya St",
    "Lenina St",
    "Mira Ave",
    "Nevsky Ave",
    "Sadovaya St",
    "Gagarina St",
    "Pushkina St",
    "Sovetskaya St",
    "Kirova St",
    "Lesnaya St",
];
const CITIES: [&str; 10] = [
    "Moscow",
    "Saint Petersburg",
    "Kazan",
    "Novosibirsk",
    "Yekaterinburg",
    "Nizhny Novgorod",
    "Samara",
    "Krasnodar",
    "Rostov-on-Don",
    "Voronezh",
];

/// What [`seed`] created, for the demo's start-up log and for tests.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SeedSummary {
    /// Orders in the shop database.
    pub orders: u64,
    /// Shop orders not CLOSED (abandoned carts included).
    pub active: u64,
    /// Rows in MES `production_orders`.
    pub mes_orders: u64,
    /// MANUFACTURING_APPROVED in the shop for over 15 minutes, absent from MES.
    pub lost_approved: u64,
    /// SHIPPED in MES while the shop still shows PACKAGING.
    pub shipped_not_in_shop: u64,
    /// PRICE_CALCULATED in MES while the shop still shows SUBMITTED.
    pub priced_not_in_shop: u64,
    /// SUBMITTED in the shop and absent from MES: the calculation request was lost.
    pub lost_submitted: u64,
}

/// Creates the reference schema in both (fresh) databases.
pub async fn create_schema(shop: &Client, mes: &Client) -> Result<(), tokio_postgres::Error> {
    shop.batch_execute(SHOP_SCHEMA).await?;
    mes.batch_execute(MES_SCHEMA).await?;
    Ok(())
}

/// Fills the empty schema with about `orders` orders created over the last 120 days.
///
/// About 88% are CLOSED; the rest are abandoned carts and orders in flight, whose time in
/// their status stays under every shipped rule's threshold, plus the planted populations of
/// [`PLANTS`]: stuck orders for each rule, orders just under each threshold, and the three
/// lost-message cases counted in [`SeedSummary`]. Runs as one shop transaction, so all times
/// share one `now()`; ends with `ANALYZE` so the rules' index range scans are planned right.
pub async fn seed(
    shop: &Client,
    mes: &Client,
    orders: u64,
) -> Result<SeedSummary, tokio_postgres::Error> {
    let n = orders.max(1) as i64;
    let result = generate(shop, mes, n).await;
    // On error the transaction is already aborted; roll back so the session stays usable.
    let end = if result.is_ok() { "commit" } else { "rollback" };
    let ended = shop.batch_execute(end).await;
    let summary = result?;
    ended?;
    shop.batch_execute("analyze").await?;
    mes.batch_execute("analyze").await?;
    Ok(summary)
}

async fn generate(
    shop: &Client,
    mes: &Client,
    n: i64,
) -> Result<SeedSummary, tokio_postgres::Error> {
    shop.batch_execute(PREPARE_SQL).await?;
    let statuses: Vec<&str> = STATUSES.to_vec();
    let types: Vec<&str> = ORDER_TYPES.iter().map(|t| t.0).collect();
    // width_bucket() takes each bucket's lower bound.
    let lower_bounds: Vec<f64> = ORDER_TYPES
        .iter()
        .scan(0.0, |acc, t| {
            let lower = *acc;
            *acc += t.1;
            Some(lower)
        })
        .collect();
    let base_prices: Vec<f64> = ORDER_TYPES.iter().map(|t| t.2).collect();
    shop.execute(
        NATURAL_SQL,
        &[
            &n,
            &types,
            &lower_bounds,
            &statuses,
            &base_prices,
            &OPERATORS,
        ],
    )
    .await?;

    // Below 20 000 orders the planted populations shrink with the data set.
    let scale = (n as f64 / 20_000.0).min(1.0);
    let plant_cols = PlantColumns::new(scale);
    shop.execute(
        PLANT_SQL,
        &[
            &plant_cols.kind,
            &plant_cols.shop_status,
            &plant_cols.mes_status,
            &plant_cols.side,
            &plant_cols.count,
            &plant_cols.min_age,
            &plant_cols.max_age,
            &plant_cols.gap_min,
            &plant_cols.gap_max,
            &plant_cols.lead,
            &n,
        ],
    )
    .await?;

    let people: [Vec<&str>; 5] = [
        FEMALE_NAMES.to_vec(),
        MALE_NAMES.to_vec(),
        SURNAMES.to_vec(),
        STREETS.to_vec(),
        CITIES.to_vec(),
    ];
    shop.execute(
        ORDERS_SQL,
        &[
            &statuses, &people[0], &people[1], &people[2], &people[3], &people[4],
        ],
    )
    .await?;

    let mes_orders = copy_to_mes(shop, mes, &statuses).await?;

    let row = shop.query_one(SUMMARY_SQL, &[]).await?;
    let count = |i: usize| row.get::<_, i64>(i) as u64;
    Ok(SeedSummary {
        orders: count(0),
        active: count(1),
        mes_orders,
        lost_approved: count(2),
        shipped_not_in_shop: count(3),
        priced_not_in_shop: count(4),
        lost_submitted: count(5),
    })
}

/// Copies the MES mirror of the generated orders in batches of `MES_BATCH` rows.
async fn copy_to_mes(
    shop: &Client,
    mes: &Client,
    statuses: &[&str],
) -> Result<u64, tokio_postgres::Error> {
    const MES_BATCH: usize = 20_000;
    let rows = shop.query(MES_ROWS_SQL, &[&statuses]).await?;
    mes.batch_execute("begin").await?;
    let mut copied = 0;
    for chunk in rows.chunks(MES_BATCH) {
        let order_id: Vec<&str> = chunk.iter().map(|r| r.get(0)).collect();
        let order_type: Vec<&str> = chunk.iter().map(|r| r.get(1)).collect();
        let status: Vec<&str> = chunk.iter().map(|r| r.get(2)).collect();
        let changed: Vec<chrono::DateTime<chrono::Utc>> = chunk.iter().map(|r| r.get(3)).collect();
        let operator: Vec<Option<i32>> = chunk.iter().map(|r| r.get(4)).collect();
        let price: Vec<Option<&str>> = chunk.iter().map(|r| r.get(5)).collect();
        let received: Vec<chrono::DateTime<chrono::Utc>> = chunk.iter().map(|r| r.get(6)).collect();
        let params: [&(dyn ToSql + Sync); 7] = [
            &order_id,
            &order_type,
            &status,
            &changed,
            &operator,
            &price,
            &received,
        ];
        match mes.execute(MES_INSERT_SQL, &params).await {
            Ok(n) => copied += n,
            Err(e) => {
                let _ = mes.batch_execute("rollback").await;
                return Err(e);
            }
        }
    }
    mes.batch_execute("commit").await?;
    Ok(copied)
}

/// Whose timestamp a planted population's age is measured on: the source its rule reads.
#[derive(Clone, Copy)]
enum Side {
    Shop,
    Mes,
}

/// One planted population: orders put into a given state at a given age.
struct Plant {
    /// Stored in the generation table only; tells the populations apart when counting.
    kind: &'static str,
    shop_status: &'static str,
    /// `None`: absent from MES.
    mes_status: Option<&'static str>,
    side: Side,
    /// Orders at 20 000 orders and more.
    count: u32,
    /// Age in the status, on `side`'s clock.
    age: (Duration, Duration),
    /// MES timestamp minus shop timestamp, in seconds: negative when MES set the status and
    /// the shop learned it through the queue, positive when CRM set it.
    gap: (f64, f64),
}

const MIN: u64 = 60;
const HOUR: u64 = 3600;
const DAY: u64 = 86_400;

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The queue delay of a status CRM sets (MES hears of it a few seconds later).
const CRM_SET: (f64, f64) = (2.0, 20.0);
/// The queue delay of a status MES sets (the shop hears of it a few seconds later).
const MES_SET: (f64, f64) = (-30.0, -2.0);

/// The planted populations. Stuck ones start 5 minutes past their rule's threshold; "near"
/// ones end at least 5 minutes under it, so that a test that runs for a few minutes after the
/// seed still sees the same counts (without the simulator, which moves them on in time).
const PLANTS: &[Plant] = &[
    // price_calculation_slow only: SUBMITTED 35–55 min (under submitted_over_1h).
    plant(
        "stuck_submitted_30m",
        "SUBMITTED",
        Some("SUBMITTED"),
        Side::Shop,
        12,
        (35 * MIN, 55 * MIN),
        CRM_SET,
    ),
    // Both SUBMITTED rules.
    plant(
        "stuck_submitted_1h",
        "SUBMITTED",
        Some("SUBMITTED"),
        Side::Shop,
        15,
        (65 * MIN, 3 * DAY),
        CRM_SET,
    ),
    plant(
        "near_submitted",
        "SUBMITTED",
        Some("SUBMITTED"),
        Side::Shop,
        4,
        (15 * MIN, 25 * MIN),
        CRM_SET,
    ),
    plant(
        "stuck_price_calculated",
        "PRICE_CALCULATED",
        Some("PRICE_CALCULATED"),
        Side::Shop,
        25,
        (DAY + 5 * MIN, 6 * DAY),
        MES_SET,
    ),
    plant(
        "near_price_calculated",
        "PRICE_CALCULATED",
        Some("PRICE_CALCULATED"),
        Side::Shop,
        5,
        (21 * HOUR, DAY - 10 * MIN),
        MES_SET,
    ),
    plant(
        "stuck_approved",
        "MANUFACTURING_APPROVED",
        Some("MANUFACTURING_APPROVED"),
        Side::Shop,
        20,
        (DAY + 5 * MIN, 5 * DAY),
        CRM_SET,
    ),
    plant(
        "near_approved",
        "MANUFACTURING_APPROVED",
        Some("MANUFACTURING_APPROVED"),
        Side::Shop,
        5,
        (21 * HOUR, DAY - 10 * MIN),
        CRM_SET,
    ),
    plant(
        "stuck_started",
        "MANUFACTURING_STARTED",
        Some("MANUFACTURING_STARTED"),
        Side::Mes,
        18,
        (3 * DAY + 5 * MIN, 10 * DAY),
        MES_SET,
    ),
    plant(
        "near_started",
        "MANUFACTURING_STARTED",
        Some("MANUFACTURING_STARTED"),
        Side::Mes,
        5,
        (2 * DAY + 18 * HOUR, 3 * DAY - 10 * MIN),
        MES_SET,
    ),
    plant(
        "stuck_completed",
        "MANUFACTURING_COMPLETED",
        Some("MANUFACTURING_COMPLETED"),
        Side::Mes,
        12,
        (DAY + 5 * MIN, 4 * DAY),
        MES_SET,
    ),
    plant(
        "near_completed",
        "MANUFACTURING_COMPLETED",
        Some("MANUFACTURING_COMPLETED"),
        Side::Mes,
        5,
        (21 * HOUR, DAY - 10 * MIN),
        MES_SET,
    ),
    plant(
        "stuck_packaging",
        "PACKAGING",
        Some("PACKAGING"),
        Side::Mes,
        15,
        (DAY + 5 * MIN, 3 * DAY),
        MES_SET,
    ),
    plant(
        "near_packaging",
        "PACKAGING",
        Some("PACKAGING"),
        Side::Mes,
        5,
        (21 * HOUR, DAY - 10 * MIN),
        MES_SET,
    ),
    plant(
        "stuck_shipped",
        "SHIPPED",
        Some("SHIPPED"),
        Side::Shop,
        30,
        (14 * DAY + HOUR, 40 * DAY),
        MES_SET,
    ),
    plant(
        "near_shipped",
        "SHIPPED",
        Some("SHIPPED"),
        Side::Shop,
        5,
        (13 * DAY, 14 * DAY - 10 * MIN),
        MES_SET,
    ),
    // Lost: CRM's "approved" never reached MES, which has no row at all (SeedSummary
    // lost_approved). Kept under a day so that manufacturing_approved_over_1d stays quiet.
    plant(
        "lost_approved",
        "MANUFACTURING_APPROVED",
        None,
        Side::Shop,
        8,
        (20 * MIN, 20 * HOUR),
        (0.0, 0.0),
    ),
    // Approved 5–10 minutes ago and not in MES yet: still in the queue, not lost. They cross
    // 15 minutes while the demo runs, so a lost-order alert fires a few minutes in.
    plant(
        "inflight_approved",
        "MANUFACTURING_APPROVED",
        None,
        Side::Shop,
        3,
        (5 * MIN, 10 * MIN),
        (0.0, 0.0),
    ),
    // Lost: the price-calculation request (SUBMITTED in the shop) never reached MES, which has
    // no row (SeedSummary lost_submitted). 10–50 minutes: past the rule's 5-minute grace, under
    // the hour of submitted_over_1h.
    plant(
        "lost_submitted",
        "SUBMITTED",
        None,
        Side::Shop,
        6,
        (10 * MIN, 50 * MIN),
        (0.0, 0.0),
    ),
    // Lost: MES shipped 30 min – 2 d ago, 2–20 h after packaging; the shop never heard.
    plant(
        "shipped_not_in_shop",
        "PACKAGING",
        Some("SHIPPED"),
        Side::Mes,
        6,
        (30 * MIN, 2 * DAY),
        (2.0 * HOUR as f64, 20.0 * HOUR as f64),
    ),
    // Lost: MES priced it 2–5 min after the request; the price never reached the shop, which
    // shows SUBMITTED for 20 min – 6 h (so the SUBMITTED rules see most of these too).
    plant(
        "priced_not_in_shop",
        "SUBMITTED",
        Some("PRICE_CALCULATED"),
        Side::Shop,
        7,
        (20 * MIN, 6 * HOUR),
        (120.0, 300.0),
    ),
];

const fn plant(
    kind: &'static str,
    shop_status: &'static str,
    mes_status: Option<&'static str>,
    side: Side,
    count: u32,
    age: (u64, u64),
    gap: (f64, f64),
) -> Plant {
    Plant {
        kind,
        shop_status,
        mes_status,
        side,
        count,
        age: (secs(age.0), secs(age.1)),
        gap,
    }
}

/// Typical time from order creation to entering a status, for planted orders' `created_at`.
fn lead_time(status: &str) -> f64 {
    let days = match status {
        "SUBMITTED" | "PRICE_CALCULATED" => 1.0,
        "MANUFACTURING_APPROVED" => 1.5,
        "MANUFACTURING_STARTED" => 2.0,
        "MANUFACTURING_COMPLETED" => 4.5,
        "PACKAGING" => 5.0,
        _ => 5.5,
    };
    days * DAY as f64
}

/// [`PLANTS`] as column arrays for `unnest`.
struct PlantColumns {
    kind: Vec<&'static str>,
    shop_status: Vec<&'static str>,
    mes_status: Vec<Option<&'static str>>,
    side: Vec<&'static str>,
    count: Vec<i32>,
    min_age: Vec<f64>,
    max_age: Vec<f64>,
    gap_min: Vec<f64>,
    gap_max: Vec<f64>,
    lead: Vec<f64>,
}

impl PlantColumns {
    fn new(scale: f64) -> Self {
        PlantColumns {
            kind: PLANTS.iter().map(|p| p.kind).collect(),
            shop_status: PLANTS.iter().map(|p| p.shop_status).collect(),
            mes_status: PLANTS.iter().map(|p| p.mes_status).collect(),
            side: PLANTS
                .iter()
                .map(|p| match p.side {
                    Side::Shop => "shop",
                    Side::Mes => "mes",
                })
                .collect(),
            count: PLANTS
                .iter()
                .map(|p| ((p.count as f64 * scale).round() as i32).max(1))
                .collect(),
            min_age: PLANTS.iter().map(|p| p.age.0.as_secs_f64()).collect(),
            max_age: PLANTS.iter().map(|p| p.age.1.as_secs_f64()).collect(),
            gap_min: PLANTS.iter().map(|p| p.gap.0).collect(),
            gap_max: PLANTS.iter().map(|p| p.gap.1).collect(),
            lead: PLANTS.iter().map(|p| lead_time(p.shop_status)).collect(),
        }
    }
}

/// Non-personal columns of a new order, and the fake personal ones.
pub(crate) struct NewOrder {
    pub order_type: &'static str,
    pub customer_name: String,
    pub customer_email: String,
    pub customer_phone: String,
    pub shipping_address: String,
}

/// A new order with fake customer data, drawn like the seed's (used by the simulator).
pub(crate) fn new_order(rng: &mut impl Rng) -> NewOrder {
    let female = rng.random_bool(0.6);
    let first = if female {
        FEMALE_NAMES.choose(rng)
    } else {
        MALE_NAMES.choose(rng)
    }
    .copied()
    .unwrap_or("Anna");
    let mut last = SURNAMES.choose(rng).copied().unwrap_or("Ivanov").to_owned();
    if female {
        last.push('a');
    }
    NewOrder {
        order_type: order_type(rng.random()),
        customer_email: format!(
            "{}.{}{:04}@example.com",
            first.to_lowercase(),
            last.to_lowercase(),
            rng.random_range(0..10_000)
        ),
        customer_phone: format!(
            "+7 9{:02} {:03}-{:02}-{:02}",
            rng.random_range(0..100),
            rng.random_range(0..1000),
            rng.random_range(0..100),
            rng.random_range(0..100)
        ),
        shipping_address: format!(
            "{} {}, apt {}, {} {}",
            rng.random_range(1..=120),
            STREETS.choose(rng).copied().unwrap_or("Lenina St"),
            rng.random_range(1..=300),
            CITIES.choose(rng).copied().unwrap_or("Moscow"),
            rng.random_range(100_000..700_000)
        ),
        customer_name: format!("{first} {last}"),
    }
}

/// The order type whose share of [`ORDER_TYPES`] covers `u` in [0, 1).
fn order_type(u: f64) -> &'static str {
    let mut acc = 0.0;
    for (name, share, _) in ORDER_TYPES {
        acc += share;
        if u < acc {
            return name;
        }
    }
    ORDER_TYPES[0].0
}

/// A price for an order of `order_type`, drawn like the seed's: 0.6–3× the typical price,
/// rounded to 100 roubles.
pub(crate) fn price(order_type: &str, rng: &mut impl Rng) -> f64 {
    let base = ORDER_TYPES
        .iter()
        .find(|t| t.0 == order_type)
        .map_or(20_000.0, |t| t.2);
    let u: f64 = rng.random();
    (base * (0.6 + 2.4 * u * u) / 100.0).round() * 100.0
}

/// Opens the shop transaction, the uniform random function and the generation table.
///
/// `seed_u(n, k)` is the k-th uniform draw in [0, 1) for order n: a hash, so results do not
/// depend on the query plan and every run yields the same data.
const PREPARE_SQL: &str = "
begin;
create or replace function pg_temp.seed_u(n bigint, k bigint) returns float8
    language sql immutable parallel safe
    as 'select (hashint8extended(n, k + 20240611) & 4503599627370495)::float8 / 4503599627370496';
create temp table seed_gen (
    n              bigint primary key,
    id             text not null,
    order_type     text not null,
    created_at     timestamptz not null,
    status         text not null,
    status_changed_at timestamptz not null,
    mes_status     text,          -- null: absent from MES
    mes_changed_at timestamptz,
    received_at    timestamptz,
    price_value    numeric(12,2) not null,
    operator_value integer not null,
    plant          text           -- the planted population, null for natural orders
) on commit drop;
";

/// The natural population: each order walks the lifecycle with random times in each status
/// (all under the shipped rules' thresholds) and is wherever that walk puts it at now().
/// $1 orders, $2 order types, $3 their lower bounds in [0, 1), $4 statuses, $5 base prices,
/// $6 operators. Orders are spread evenly over 120 days (10 368 000 s), JW-00000001 oldest.
const NATURAL_SQL: &str = "
insert into seed_gen
-- materialized: inlined, every reference to d1..d9 and t would recompute its draws
with b as materialized (
    select n,
           ($1::bigint - n + pg_temp.seed_u(n, 0)) * 10368000.0::float8 / $1::bigint as age,
           pg_temp.seed_u(n, 1) < 0.03 as abandoned_initiated,
           pg_temp.seed_u(n, 2) < 0.028 as abandoned_uploaded,
           120 + 3480 * pg_temp.seed_u(n, 3) ^ 2 as d1,       -- cart: 2 min – 1 h
           300 + 172800 * pg_temp.seed_u(n, 4) ^ 3 as d2,     -- 3D model: 5 min – 2 days
           case when pg_temp.seed_u(n, 5) < 0.05               -- price: 1–5 min, rarely 25
                then 300 + 1200 * pg_temp.seed_u(n, 6)
                else 60 + 240 * pg_temp.seed_u(n, 6) end as d3,
           600 + 72000 * pg_temp.seed_u(n, 7) ^ 2 as d4,      -- sales: 10 min – 20 h
           300 + 72000 * pg_temp.seed_u(n, 8) ^ 2 as d5,      -- operator: 5 min – 20 h
           10800 + 216000 * pg_temp.seed_u(n, 9) as d6,       -- making: 3 h – 2.6 days
           600 + 72000 * pg_temp.seed_u(n, 10) ^ 2 as d7,     -- to packaging: 10 min – 20 h
           1800 + 72000 * pg_temp.seed_u(n, 11) ^ 2 as d8,    -- packing: 30 min – 20 h
           86400 + 777600 * pg_temp.seed_u(n, 12) ^ 1.5 as d9 -- carrier: 1–10 days
    from generate_series(1::bigint, $1::bigint) as n
), t as materialized (
    -- t[k + 1]: seconds from creation to entering status k
    select n, age, abandoned_initiated, abandoned_uploaded,
           array[0, d1, d1 + d2, d1 + d2 + d3, d1 + d2 + d3 + d4, d1 + d2 + d3 + d4 + d5,
                 d1 + d2 + d3 + d4 + d5 + d6, d1 + d2 + d3 + d4 + d5 + d6 + d7,
                 d1 + d2 + d3 + d4 + d5 + d6 + d7 + d8,
                 d1 + d2 + d3 + d4 + d5 + d6 + d7 + d8 + d9]::float8[] as t
    from b
), k as (
    select n, age, t,
           case when abandoned_initiated or age < t[2] then 0
                when abandoned_uploaded or age < t[3] then 1
                when age < t[4] then 2
                when age < t[5] then 3
                when age < t[6] then 4
                when age < t[7] then 5
                when age < t[8] then 6
                when age < t[9] then 7
                when age < t[10] then 8
                else 9 end as k,
           width_bucket(pg_temp.seed_u(n, 20), $3::float8[]) as type_idx,
           -- queue delay between the two databases, seconds
           1 + 9 * pg_temp.seed_u(n, 21) as crm_delay,
           2 + 28 * pg_temp.seed_u(n, 21) as mes_delay
    from t
)
select n,
       'JW-' || lpad(n::text, 8, '0'),
       ($2::text[])[type_idx],
       now() - age * interval '1 second',
       ($4::text[])[k + 1],
       now() - (age - t[k + 1]) * interval '1 second',
       case when k >= 2 then ($4::text[])[k + 1] end,
       case when k >= 2 then least(now(), now() - (age - t[k + 1]
            + case when k in (3, 5, 6, 7, 8) then mes_delay else -crm_delay end)
            * interval '1 second') end,
       case when k >= 2 then least(now(), now() - (age - t[3] - crm_delay) * interval '1 second') end,
       round((($5::float8[])[type_idx] * (0.6 + 2.4 * pg_temp.seed_u(n, 22) ^ 2))::numeric, -2),
       1 + floor($6::int * pg_temp.seed_u(n, 23))::int,
       null
from k
";

/// Overwrites a few natural orders with the planted populations. Each planted order gets the
/// order number whose creation time fits its age, so ids stay roughly chronological.
/// $1..$10 the columns of [`PlantColumns`], $11 the number of orders.
const PLANT_SQL: &str = "
with spec as (
    select *
    from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::float8[],
                $7::float8[], $8::float8[], $9::float8[], $10::float8[])
         with ordinality
         as s(kind, shop_status, mes_status, side, cnt, min_age, max_age, gap_min, gap_max,
              lead, ord)
), p as (
    select s.*,
           -- more of them recently stuck than long ago
           min_age + (max_age - min_age) * pg_temp.seed_u(i, 1000 + ord) ^ 2 as age,
           gap_min + (gap_max - gap_min) * pg_temp.seed_u(i, 2000 + ord) as gap,
           lead * (0.5 + pg_temp.seed_u(i, 3000 + ord)) as lead_s,
           i
    from spec s, generate_series(1, s.cnt) as i
), q as (
    -- seconds since the shop entered its status
    select p.*, case side when 'shop' then age else age + gap end as shop_age
    from p
), r as (
    select distinct on (n) q.*, n
    from q, lateral (
        select greatest(1, least($11::bigint,
               ceil($11::bigint * (1 - (shop_age + lead_s) / 10368000.0))))::bigint as n
    ) x
    order by n, kind, i
)
update seed_gen g
set created_at = now() - (r.shop_age + r.lead_s) * interval '1 second',
    status = r.shop_status,
    status_changed_at = now() - r.shop_age * interval '1 second',
    mes_status = r.mes_status,
    mes_changed_at = case when r.mes_status is not null
        then least(now(), now() - (r.shop_age - r.gap) * interval '1 second') end,
    received_at = case when r.mes_status is null then null
        when r.shop_status = 'SUBMITTED' then now() - (r.shop_age - 1) * interval '1 second'
        else now() - (r.shop_age + 0.8 * r.lead_s) * interval '1 second' end,
    plant = r.kind
from r
where g.n = r.n
";

/// Writes the generated orders with fake personal data. $1 statuses, $2 female first names,
/// $3 male first names, $4 surnames (male form), $5 streets, $6 cities.
const ORDERS_SQL: &str = "
insert into orders (id, customer_name, customer_email, customer_phone, shipping_address,
                    order_type, status, status_changed_at, created_at, price)
select id,
       first_name || ' ' || last_name,
       lower(first_name) || '.' || lower(last_name)
           || lpad(floor(10000 * pg_temp.seed_u(n, 33))::int::text, 4, '0') || '@example.com',
       '+7 9' || lpad(floor(100 * pg_temp.seed_u(n, 34))::int::text, 2, '0')
           || ' ' || lpad(floor(1000 * pg_temp.seed_u(n, 35))::int::text, 3, '0')
           || '-' || lpad(floor(100 * pg_temp.seed_u(n, 36))::int::text, 2, '0')
           || '-' || lpad(floor(100 * pg_temp.seed_u(n, 37))::int::text, 2, '0'),
       (1 + floor(120 * pg_temp.seed_u(n, 38)))::int || ' '
           || ($5::text[])[1 + floor(cardinality($5::text[]) * pg_temp.seed_u(n, 39))::int]
           || ', apt ' || (1 + floor(300 * pg_temp.seed_u(n, 40)))::int || ', '
           || ($6::text[])[1 + floor(cardinality($6::text[]) * pg_temp.seed_u(n, 41))::int]
           || ' ' || (100000 + floor(600000 * pg_temp.seed_u(n, 42)))::int,
       order_type,
       status,
       status_changed_at,
       created_at,
       case when array_position($1::text[], status) >= 4 then price_value end
from (
    select g.*,
           case when female
                then ($2::text[])[1 + floor(cardinality($2::text[]) * pg_temp.seed_u(n, 31))::int]
                else ($3::text[])[1 + floor(cardinality($3::text[]) * pg_temp.seed_u(n, 31))::int]
           end as first_name,
           ($4::text[])[1 + floor(cardinality($4::text[]) * pg_temp.seed_u(n, 32))::int]
               || case when female then 'a' else '' end as last_name
    from seed_gen g, lateral (select pg_temp.seed_u(n, 30) < 0.6 as female) f
) o
order by n
";

/// The MES mirror: price from PRICE_CALCULATED on, operator from MANUFACTURING_STARTED on.
const MES_ROWS_SQL: &str = "
select id, order_type, mes_status, mes_changed_at,
       case when array_position($1::text[], mes_status) >= 6 then operator_value end,
       case when array_position($1::text[], mes_status) >= 4 then price_value::text end,
       received_at
from seed_gen
where mes_status is not null
order by n
";

const MES_INSERT_SQL: &str = "
insert into production_orders (order_id, order_type, status, status_changed_at, operator_id,
                               price, received_at)
select order_id, order_type, status, status_changed_at, operator_id, price::numeric,
       received_at
from unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::int[], $6::text[],
            $7::timestamptz[])
     as t(order_id, order_type, status, status_changed_at, operator_id, price, received_at)
";

const SUMMARY_SQL: &str = "
select count(*),
       count(*) filter (where status <> 'CLOSED'),
       count(*) filter (where plant = 'lost_approved'),
       count(*) filter (where plant = 'shipped_not_in_shop'),
       count(*) filter (where plant = 'priced_not_in_shop'),
       count(*) filter (where plant = 'lost_submitted')
from seed_gen
";
