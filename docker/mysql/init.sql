-- A replication user and a table to capture (run once by the mysql image on first start).
CREATE USER 'cdc'@'%' IDENTIFIED BY 'cdc';
GRANT SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'cdc'@'%';
CREATE TABLE shop.orders (
    id bigint AUTO_INCREMENT PRIMARY KEY,
    customer_id int NOT NULL,
    amount decimal(12, 2) NOT NULL,
    status varchar(16) NOT NULL DEFAULT 'new',
    created_at timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
);
INSERT INTO shop.orders (customer_id, amount) VALUES (1, 10.50), (2, 99.99);
