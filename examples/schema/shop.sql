-- Shop DB reference schema: the tables orderwatch reads, shared by Shop API and CRM.
-- Run once on a fresh database. `orderwatch demo` loads it as is.

-- Status flow (the system that sets each status):
--   INITIATED (shop) → FILE_UPLOADED (shop) → SUBMITTED (shop) → PRICE_CALCULATED (MES)
--   → MANUFACTURING_APPROVED (CRM) → MANUFACTURING_STARTED (MES) → MANUFACTURING_COMPLETED (MES)
--   → PACKAGING (MES) → SHIPPED (MES) → CLOSED (CRM)
create table orders (
    id                text primary key,          -- 'JW-00000001'; the join key with MES
    -- Personal data. orderwatch never reads these columns: it selects only the id, the status,
    -- the status time and the allow-listed label columns (order_type).
    customer_name     text not null,
    customer_email    text not null,
    customer_phone    text not null,
    shipping_address  text not null,
    order_type        text not null,             -- ring, earrings, pendant, bracelet, necklace, brooch
    status            text not null check (status in (
                          'INITIATED', 'FILE_UPLOADED', 'SUBMITTED', 'PRICE_CALCULATED',
                          'MANUFACTURING_APPROVED', 'MANUFACTURING_STARTED',
                          'MANUFACTURING_COMPLETED', 'PACKAGING', 'SHIPPED', 'CLOSED')),
    status_changed_at timestamptz not null,      -- when the order entered its current status
    created_at        timestamptz not null,
    price             numeric(12,2)              -- null until MES has calculated it
);

-- Every stuck rule runs `where status = $1 and status_changed_at < now() - $2`: a range scan
-- on this index, so its cost grows with the number of stuck orders, not with the table.
create index orders_status_changed_at_idx on orders (status, status_changed_at);

-- One row per status change, for deployments that model orders as a history table
-- (the latest row per order is its current status). The demo leaves it empty.
create table order_status_history (
    id         bigserial primary key,
    order_id   text not null,
    status     text not null,
    changed_at timestamptz not null
);

-- Finds the latest row of one order.
create index order_status_history_order_id_changed_at_idx
    on order_status_history (order_id, changed_at);
-- Range scan for "entered this status before T".
create index order_status_history_status_changed_at_idx
    on order_status_history (status, changed_at);
