-- MES DB reference schema: the manufacturing execution system's copy of each order.
-- Run once on a fresh database. `orderwatch demo` loads it as is.
--
-- MES learns of an order when CRM sends the calculation request (status SUBMITTED) through the
-- queue, and from then on mirrors the order's status, CLOSED included: CRM sends its status
-- changes to MES, and MES sends its own (price, operator, progress) back. An order that one
-- database has and the other does not, or that has different statuses in the two, is a lost
-- message. There is no personal data here.
create table production_orders (
    order_id          text primary key,          -- the shop's orders.id
    order_type        text not null,             -- ring, earrings, pendant, bracelet, necklace, brooch
    status            text not null,             -- same values as the shop's orders.status
    status_changed_at timestamptz not null,      -- when MES recorded the current status
    operator_id       integer,                   -- set from MANUFACTURING_STARTED on
    price             numeric(12,2),             -- set from PRICE_CALCULATED on
    received_at       timestamptz not null       -- when the calculation request arrived
);

-- Range scan for the stuck rules on MES statuses.
create index production_orders_status_changed_at_idx
    on production_orders (status, status_changed_at);
