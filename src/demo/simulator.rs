//! Keeps the demo alive: new orders arrive and orders move through the statuses in both
//! databases, the way Shop API, CRM and MES would move them, so that alerts fire and resolve.
//!
//! Each tick moves the oldest orders of each status that are *not* stuck (younger than the
//! shipped rule's threshold) one step on, about as many as arrive, so every status keeps its
//! population. Orders older than the threshold (the seed's planted stuck ones) and orders whose
//! two databases disagree (the planted lost ones) are left alone, except by the periodic
//! unstick step, which repairs a few of them so their alerts visibly resolve.

use std::future::Future;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_postgres::Client;
use tracing::debug;

use super::seed::{self, OPERATORS, STATUSES};

/// How fast the simulated business runs.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// Time between two steps (default 2 s).
    pub tick: Duration,
    /// New INITIATED orders per tick (default 1); about as many leave each status per tick.
    pub new_orders_per_tick: u32,
    /// Time between two unstick steps (default 60 s): each repairs the 1–3 oldest orders of
    /// one stuck or lost population, rotating through them.
    pub unstick_every: Duration,
    /// A planted slowdown of the price calculation (SUBMITTED → PRICE_CALCULATED), so that
    /// the order flow metrics show one: `None` for none.
    pub price_slowdown: Option<Slowdown>,
}

/// The CRM's price calculation slowing down now and then.
#[derive(Debug, Clone, Copy)]
pub struct Slowdown {
    /// From the start to the first slowdown.
    pub after: Duration,
    /// From one slowdown's start to the next's.
    pub every: Duration,
    /// How long each lasts.
    pub lasts: Duration,
    /// The share of its usual pace the price calculation keeps meanwhile.
    pub pace: f64,
}

impl Slowdown {
    /// Whether `elapsed` since the start falls within a slowdown.
    pub fn active(&self, elapsed: Duration) -> bool {
        let every = self.every.max(Duration::from_secs(1));
        elapsed >= self.after
            && Duration::from_secs_f64((elapsed - self.after).as_secs_f64() % every.as_secs_f64())
                < self.lasts
    }
}

/// The demo's slowdown: a tenth of the pace for 10 minutes, 1 minute after the start and
/// every 30 minutes. Strong enough to move the median price from a minute or two to 7–9
/// minutes (the histogram's next buckets), short of the 30-minute stuck rule. (A quarter of
/// the pace for 8 minutes kept every price within one bucket, 2–5 minutes: invisible.)
pub const PRICE_SLOWDOWN: Slowdown = Slowdown {
    after: Duration::from_secs(60),
    every: Duration::from_secs(30 * 60),
    lasts: Duration::from_secs(10 * 60),
    pace: 0.1,
};

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            tick: Duration::from_secs(2),
            new_orders_per_tick: 1,
            unstick_every: Duration::from_secs(60),
            price_slowdown: Some(PRICE_SLOWDOWN),
        }
    }
}

/// Runs the simulation until `shutdown` completes. A step in progress finishes first, so the
/// simulator itself never leaves the two databases disagreeing about an order.
///
/// Returns the first database error.
pub async fn run(
    shop: Client,
    mes: Client,
    cfg: SimulatorConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tokio_postgres::Error> {
    // A zero period would make tokio's interval panic.
    let tick_every = cfg.tick.max(Duration::from_millis(10));
    let unstick_every = cfg.unstick_every.max(Duration::from_millis(10));
    let mut sim = Simulator::new(shop, mes, cfg.new_orders_per_tick).await?;
    sim.slowdown = cfg.price_slowdown;
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut unstick = tokio::time::interval_at(Instant::now() + unstick_every, unstick_every);
    unstick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            _ = tick.tick() => sim.tick().await?,
            _ = unstick.tick() => sim.unstick().await?,
        }
    }
}

/// Fixed, so two demo runs behave alike.
const RNG_SEED: u64 = 0x6f72_6465_7277_6174;

/// Age after which an order in status `STATUSES[k]` is not moved by the normal flow: an
/// abandoned cart for the first two, stuck for the others. These mirror the smallest
/// threshold of the shipped rules (rules/*.yaml) for that status, and the seed's cart times.
const LIMITS: [Duration; 9] = [
    Duration::from_secs(3600),             // INITIATED: abandoned after an hour
    Duration::from_secs(2 * 86_400 + 600), // FILE_UPLOADED: abandoned after two days
    Duration::from_secs(30 * 60),          // SUBMITTED: price_calculation_slow
    Duration::from_secs(86_400),           // PRICE_CALCULATED: price_calculated_over_1d
    Duration::from_secs(86_400),           // MANUFACTURING_APPROVED: manufacturing_approved_over_1d
    Duration::from_secs(3 * 86_400),       // MANUFACTURING_STARTED: manufacturing_started_over_3d
    Duration::from_secs(86_400), // MANUFACTURING_COMPLETED: manufacturing_completed_over_1d
    Duration::from_secs(86_400), // PACKAGING: packaging_over_1d
    Duration::from_secs(14 * 86_400), // SHIPPED: shipped_not_closed_14d
];

/// Share of new orders that leave each status per tick: some carts are abandoned.
const FLOW: [f64; 9] = [0.85, 0.765, 0.765, 0.765, 0.765, 0.765, 0.765, 0.765, 0.765];

/// How many candidates past the wanted count to read, to skip inconsistent ones and to catch
/// every order about to cross its threshold.
const SPARE_CANDIDATES: i64 = 20;

/// Statuses set by MES: MES records them first and the shop learns through the queue.
fn set_by_mes(k: usize) -> bool {
    matches!(k, 3 | 5 | 6 | 7 | 8)
}

/// A population the unstick step repairs.
#[derive(Clone, Copy)]
enum Repair {
    /// Orders in status `k` past `older_than` on `source`'s clock: move them one step on.
    Stuck {
        k: usize,
        mes: bool,
        older_than: Duration,
    },
    /// Approved in the shop, absent from MES: deliver the lost message to MES.
    LostApproved,
    /// Shipped in MES, packaging in the shop: deliver the lost message to the shop.
    ShippedNotInShop,
    /// Priced in MES, submitted in the shop: deliver the lost price to the shop.
    PricedNotInShop,
}

impl Repair {
    /// For the log: the population this repair works on.
    fn name(self) -> &'static str {
        match self {
            Repair::Stuck { k, .. } => STATUSES[k],
            Repair::LostApproved => "approved_missing_in_mes",
            Repair::ShippedNotInShop => "shipped_not_in_shop",
            Repair::PricedNotInShop => "priced_not_in_shop",
        }
    }
}

const REPAIRS: [Repair; 10] = [
    Repair::Stuck {
        k: 2,
        mes: false,
        older_than: Duration::from_secs(30 * 60),
    },
    Repair::LostApproved,
    Repair::Stuck {
        k: 3,
        mes: false,
        older_than: Duration::from_secs(86_400),
    },
    Repair::Stuck {
        k: 4,
        mes: false,
        older_than: Duration::from_secs(86_400),
    },
    Repair::ShippedNotInShop,
    Repair::Stuck {
        k: 5,
        mes: true,
        older_than: Duration::from_secs(3 * 86_400),
    },
    Repair::Stuck {
        k: 6,
        mes: true,
        older_than: Duration::from_secs(86_400),
    },
    Repair::PricedNotInShop,
    Repair::Stuck {
        k: 7,
        mes: true,
        older_than: Duration::from_secs(86_400),
    },
    Repair::Stuck {
        k: 8,
        mes: false,
        older_than: Duration::from_secs(14 * 86_400),
    },
];

/// An order the simulator is about to move.
struct Candidate {
    id: String,
    order_type: String,
    age: f64,
}

struct Simulator {
    shop: Client,
    mes: Client,
    rng: StdRng,
    new_per_tick: u32,
    next_id: u64,
    /// Per status, the not-stuck population at the first tick; the flow steers back to it.
    targets: [Option<i64>; 9],
    /// Next entry of [`REPAIRS`] to try.
    rotation: usize,
    /// Orders within this of their limit are moved on whatever the flow says.
    guard: f64,
    /// The planted price calculation slowdown, and when the simulation started.
    slowdown: Option<Slowdown>,
    started: Instant,
    /// Whether the last tick was within a slowdown (to log its start and end).
    slow: bool,
}

impl Simulator {
    async fn new(
        shop: Client,
        mes: Client,
        new_per_tick: u32,
    ) -> Result<Self, tokio_postgres::Error> {
        let row = shop
            .query_one(
                "select coalesce(max(substr(id, 4)::bigint), 0)
                 from orders where id ~ '^JW-[0-9]+$'",
                &[],
            )
            .await?;
        let max: i64 = row.get(0);
        Ok(Simulator {
            shop,
            mes,
            rng: StdRng::seed_from_u64(RNG_SEED),
            new_per_tick,
            next_id: max as u64 + 1,
            targets: [None; 9],
            rotation: 0,
            guard: 300.0,
            slowdown: None,
            started: Instant::now(),
            slow: false,
        })
    }

    /// One step of the normal flow: the latest statuses first, so that an order moves at most
    /// one step per tick; then the new orders.
    async fn tick(&mut self) -> Result<(), tokio_postgres::Error> {
        for k in (0..LIMITS.len()).rev() {
            self.flow(k).await?;
        }
        for _ in 0..self.new_per_tick {
            self.create_order().await?;
        }
        Ok(())
    }

    /// Moves about as many orders out of status `k` as flow in, nudged towards the starting
    /// population, plus every order about to cross its threshold.
    async fn flow(&mut self, k: usize) -> Result<(), tokio_postgres::Error> {
        let status = STATUSES[k];
        let limit = LIMITS[k].as_secs_f64();
        let row = self
            .shop
            .query_one(
                "select count(*) from orders
                 where status = $1 and status_changed_at > now() - make_interval(secs => $2)",
                &[&status, &limit],
            )
            .await?;
        let count: i64 = row.get(0);
        let target = *self.targets[k].get_or_insert(count);

        let rate = f64::from(self.new_per_tick) * FLOW[k];
        let mut want = rate.floor() as i64 + i64::from(self.rng.random_bool(rate.fract()));
        want += (count - target).signum();
        let mut want = want.max(0);
        // The planted slowdown: the CRM prices only a share of what it would (orders about
        // to cross the rule's threshold are still moved below, as ever).
        if k == 2 {
            let slow = self
                .slowdown
                .is_some_and(|s| s.active(self.started.elapsed()));
            if slow != self.slow {
                tracing::info!(
                    "demo: price calculation {}",
                    if slow {
                        "slows down (planted: a tenth of its pace for 10 minutes)"
                    } else {
                        "back to its pace"
                    }
                );
                self.slow = slow;
            }
            if let (true, Some(s)) = (slow, self.slowdown) {
                let pace = s.pace.clamp(0.0, 1.0);
                want = (0..want).filter(|_| self.rng.random_bool(pace)).count() as i64;
            }
        }

        // Carts: a random pick, so that some age out (are abandoned). Orders: the oldest
        // first, so none of them crosses its rule's threshold.
        let order = if k < 2 {
            "random()"
        } else {
            "status_changed_at"
        };
        let sql = format!(
            "select id, order_type, extract(epoch from now() - status_changed_at)::float8
             from orders
             where status = $1 and status_changed_at > now() - make_interval(secs => $2)
             order by {order} limit $3"
        );
        let rows = self
            .shop
            .query(&sql, &[&status, &limit, &(want + SPARE_CANDIDATES)])
            .await?;
        let candidates: Vec<Candidate> = rows
            .iter()
            .map(|r| Candidate {
                id: r.get(0),
                order_type: r.get(1),
                age: r.get(2),
            })
            .collect();
        let forced = if k >= 2 {
            candidates
                .iter()
                .filter(|c| c.age > limit - self.guard)
                .count() as i64
        } else {
            0
        };
        let take = want.max(forced) as usize;
        if take == 0 {
            return Ok(());
        }
        let consistent = self.consistent(k, candidates).await?;
        for c in consistent.into_iter().take(take) {
            self.advance(k, &c, "flow").await?;
        }
        Ok(())
    }

    /// The candidates whose MES row agrees with the shop: the same status from SUBMITTED on,
    /// no row before. The others are lost messages, left for the unstick step.
    async fn consistent(
        &self,
        k: usize,
        candidates: Vec<Candidate>,
    ) -> Result<Vec<Candidate>, tokio_postgres::Error> {
        let ids: Vec<&str> = candidates.iter().map(|c| c.id.as_str()).collect();
        let rows = self
            .mes
            .query(
                "select order_id, status from production_orders where order_id = any($1)",
                &[&ids],
            )
            .await?;
        let mes_status = |id: &str| {
            rows.iter()
                .find(|r| r.get::<_, &str>(0) == id)
                .map(|r| r.get::<_, String>(1))
        };
        Ok(candidates
            .into_iter()
            .filter(|c| match mes_status(&c.id) {
                None => k < 2,
                Some(s) => k >= 2 && s == STATUSES[k],
            })
            .collect())
    }

    /// Moves one order from status `k` to the next in both databases, in the order the
    /// systems would: the one that sets the status first, the other through the queue.
    async fn advance(
        &mut self,
        k: usize,
        c: &Candidate,
        why: &str,
    ) -> Result<(), tokio_postgres::Error> {
        let next = k + 1;
        let price = (next == 3).then(|| seed::price(&c.order_type, &mut self.rng));
        let operator = (next == 5).then(|| self.rng.random_range(1..=OPERATORS));
        if set_by_mes(next) {
            self.update_mes(k, c, price, operator).await?;
            self.update_shop(k, &c.id, price).await?;
        } else {
            self.update_shop(k, &c.id, price).await?;
            if next == 2 {
                self.mes
                    .execute(
                        "insert into production_orders
                             (order_id, order_type, status, status_changed_at, received_at)
                         values ($1, $2, 'SUBMITTED', now(), now())
                         on conflict (order_id) do nothing",
                        &[&c.id, &c.order_type],
                    )
                    .await?;
            } else if next > 2 {
                self.update_mes(k, c, price, operator).await?;
            }
        }
        debug!(order_id = %c.id, from = STATUSES[k], to = STATUSES[next], why, "simulator moved order");
        Ok(())
    }

    async fn update_shop(
        &self,
        k: usize,
        id: &str,
        price: Option<f64>,
    ) -> Result<u64, tokio_postgres::Error> {
        self.shop
            .execute(
                "update orders
                 set status = $2, status_changed_at = now(),
                     price = coalesce($3::float8::numeric(12,2), price)
                 where id = $1 and status = $4",
                &[&id, &STATUSES[k + 1], &price, &STATUSES[k]],
            )
            .await
    }

    async fn update_mes(
        &self,
        k: usize,
        c: &Candidate,
        price: Option<f64>,
        operator: Option<i32>,
    ) -> Result<u64, tokio_postgres::Error> {
        self.mes
            .execute(
                "update production_orders
                 set status = $2, status_changed_at = now(),
                     price = coalesce($3::float8::numeric(12,2), price),
                     operator_id = coalesce($4::int, operator_id)
                 where order_id = $1 and status = $5",
                &[&c.id, &STATUSES[k + 1], &price, &operator, &STATUSES[k]],
            )
            .await
    }

    /// A new order: a cart with its first item, fake customer data included.
    async fn create_order(&mut self) -> Result<(), tokio_postgres::Error> {
        let id = format!("JW-{:08}", self.next_id);
        self.next_id += 1;
        let o = seed::new_order(&mut self.rng);
        self.shop
            .execute(
                "insert into orders (id, customer_name, customer_email, customer_phone,
                                     shipping_address, order_type, status, status_changed_at,
                                     created_at)
                 values ($1, $2, $3, $4, $5, $6, 'INITIATED', now(), now())
                 on conflict (id) do nothing",
                &[
                    &id,
                    &o.customer_name,
                    &o.customer_email,
                    &o.customer_phone,
                    &o.shipping_address,
                    &o.order_type,
                ],
            )
            .await?;
        debug!(order_id = %id, "simulator created order");
        Ok(())
    }

    /// Repairs the 1–3 oldest orders of the next population in [`REPAIRS`] that has any.
    async fn unstick(&mut self) -> Result<(), tokio_postgres::Error> {
        let n = self.rng.random_range(1..=3);
        for _ in 0..REPAIRS.len() {
            let repair = REPAIRS[self.rotation];
            self.rotation = (self.rotation + 1) % REPAIRS.len();
            let done = match repair {
                Repair::Stuck { k, mes, older_than } => {
                    self.unstick_stuck(k, mes, older_than, n).await?
                }
                Repair::LostApproved => self.deliver_approved(n).await?,
                Repair::ShippedNotInShop => self.deliver_shipped(n).await?,
                Repair::PricedNotInShop => self.deliver_price(n).await?,
            };
            if done > 0 {
                debug!(
                    population = repair.name(),
                    orders = done,
                    "simulator unstuck orders"
                );
                return Ok(());
            }
        }
        Ok(())
    }

    async fn unstick_stuck(
        &mut self,
        k: usize,
        mes: bool,
        older_than: Duration,
        n: usize,
    ) -> Result<usize, tokio_postgres::Error> {
        let (db, sql) = if mes {
            (
                &self.mes,
                "select o.order_id, o.order_type from production_orders o
                 where status = $1 and status_changed_at < now() - make_interval(secs => $2)
                 order by status_changed_at limit $3",
            )
        } else {
            (
                &self.shop,
                "select id, order_type from orders
                 where status = $1 and status_changed_at < now() - make_interval(secs => $2)
                 order by status_changed_at limit $3",
            )
        };
        let rows = db
            .query(
                sql,
                &[
                    &STATUSES[k],
                    &older_than.as_secs_f64(),
                    &(n as i64 + SPARE_CANDIDATES),
                ],
            )
            .await?;
        let candidates: Vec<Candidate> = rows
            .iter()
            .map(|r| Candidate {
                id: r.get(0),
                order_type: r.get(1),
                age: 0.0,
            })
            .collect();
        // Both sides must agree: a lost order is repaired by its own entry.
        let ids: Vec<&str> = candidates.iter().map(|c| c.id.as_str()).collect();
        let shop_rows = self
            .shop
            .query(
                "select id from orders where id = any($1) and status = $2",
                &[&ids, &STATUSES[k]],
            )
            .await?;
        let in_shop: Vec<String> = shop_rows.iter().map(|r| r.get(0)).collect();
        let candidates: Vec<Candidate> = candidates
            .into_iter()
            .filter(|c| in_shop.contains(&c.id))
            .collect();
        let chosen: Vec<Candidate> = self
            .consistent(k, candidates)
            .await?
            .into_iter()
            .take(n)
            .collect();
        for c in &chosen {
            self.advance(k, c, "unstick").await?;
        }
        Ok(chosen.len())
    }

    /// Delivers the lost "approved" message: MES finally gets the order.
    async fn deliver_approved(&mut self, n: usize) -> Result<usize, tokio_postgres::Error> {
        let rows = self
            .shop
            .query(
                "select id, order_type, price::float8 from orders
                 where status = 'MANUFACTURING_APPROVED'
                   and status_changed_at < now() - interval '15 minutes'
                 order by status_changed_at",
                &[],
            )
            .await?;
        let ids: Vec<&str> = rows.iter().map(|r| r.get(0)).collect();
        let known = self
            .mes
            .query(
                "select order_id from production_orders where order_id = any($1)",
                &[&ids],
            )
            .await?;
        let known: Vec<&str> = known.iter().map(|r| r.get(0)).collect();
        let mut done = 0;
        for r in rows
            .iter()
            .filter(|r| !known.contains(&r.get::<_, &str>(0)))
            .take(n)
        {
            let id: &str = r.get(0);
            let order_type: &str = r.get(1);
            let price: Option<f64> = r.get(2);
            self.mes
                .execute(
                    "insert into production_orders
                         (order_id, order_type, status, status_changed_at, price, received_at)
                     values ($1, $2, 'MANUFACTURING_APPROVED', now(),
                             $3::float8::numeric(12,2), now())
                     on conflict (order_id) do nothing",
                    &[&id, &order_type, &price],
                )
                .await?;
            debug!(order_id = %id, "simulator delivered lost approval to MES");
            done += 1;
        }
        Ok(done)
    }

    /// Delivers the lost "shipped" message: the shop finally learns the order left.
    async fn deliver_shipped(&mut self, n: usize) -> Result<usize, tokio_postgres::Error> {
        let rows = self
            .mes
            .query(
                "select order_id from production_orders where status = 'SHIPPED'
                 order by status_changed_at",
                &[],
            )
            .await?;
        let ids: Vec<&str> = rows.iter().map(|r| r.get(0)).collect();
        let lagging = self
            .shop
            .query(
                "select id from orders where id = any($1) and status = 'PACKAGING'",
                &[&ids],
            )
            .await?;
        let lagging: Vec<&str> = lagging.iter().map(|r| r.get(0)).collect();
        let mut done = 0;
        for id in ids.iter().filter(|id| lagging.contains(id)).take(n) {
            self.update_shop(7, id, None).await?;
            debug!(order_id = %id, "simulator delivered lost shipment to the shop");
            done += 1;
        }
        Ok(done)
    }

    /// Delivers the lost price: the shop finally shows PRICE_CALCULATED with MES's price.
    async fn deliver_price(&mut self, n: usize) -> Result<usize, tokio_postgres::Error> {
        let rows = self
            .shop
            .query(
                "select id from orders where status = 'SUBMITTED' order by status_changed_at",
                &[],
            )
            .await?;
        let ids: Vec<&str> = rows.iter().map(|r| r.get(0)).collect();
        let priced = self
            .mes
            .query(
                "select order_id, price::float8 from production_orders
                 where order_id = any($1) and status = 'PRICE_CALCULATED'",
                &[&ids],
            )
            .await?;
        let mut done = 0;
        for id in ids {
            if done == n {
                break;
            }
            let Some(row) = priced.iter().find(|r| r.get::<_, &str>(0) == id) else {
                continue;
            };
            let price: Option<f64> = row.get(1);
            self.update_shop(2, id, price).await?;
            debug!(order_id = %id, "simulator delivered lost price to the shop");
            done += 1;
        }
        Ok(done)
    }
}
