-- A replication user and a table to capture (run once by the postgres image on first start).
CREATE ROLE cdc WITH LOGIN REPLICATION PASSWORD 'cdc';
CREATE TABLE public.orders (
    id bigserial PRIMARY KEY,
    customer_id int NOT NULL,
    amount numeric(12, 2) NOT NULL,
    status text NOT NULL DEFAULT 'new',
    created_at timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT ON ALL TABLES IN SCHEMA public TO cdc;
GRANT CREATE ON DATABASE shop TO cdc;   -- the daemon creates its publication
ALTER TABLE public.orders OWNER TO cdc; -- a publication's tables must be owned by its creator
INSERT INTO public.orders (customer_id, amount) VALUES (1, 10.50), (2, 99.99);
