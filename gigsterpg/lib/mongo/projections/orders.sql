-- gigsterpg projection "orders": one row per order, one document per row.
--
-- How a projection works (README, "export-orders"): every column of the result
-- becomes a field of the document, in the order of the SELECT; "_id" is the
-- document's _id (a NULL or empty one makes the row a reject, "no uid"); a json
-- column becomes sub-documents and arrays (its numbers kept exact, as Decimal128
-- when they have a fraction: hence price + 0.00 below); numeric becomes Decimal128. A column named
-- "count: <reason>" is not part of the document: it is a boolean or a number
-- the run adds up per reason in its report. Parameters: tax_rate (numeric) and
-- the session's TimeZone (the --time-zone setting), which decides the calendar
-- date of a timestamptz. Write a literal percent sign as two.
--
-- The lines "-- needs: table(columns)" are checked against the catalog before
-- the query runs: each table and column must exist and be readable.
-- The first table named is the one whose rows are counted for the progress bar.
--
-- needs: orders(uid, client_uid, date_of_order, status)
-- needs: clients(uid, name, address, latitude, longitude, promotion_date)
-- needs: products(uid, name, brand, price)
-- needs: order_items(uid, order_uid, product_uid, quantity, price)

WITH weekdays (name, isodow) AS (VALUES
    ('monday', 1), ('mon', 1), ('lunes', 1), ('lun', 1),
    ('tuesday', 2), ('tue', 2), ('tues', 2), ('martes', 2), ('mar', 2),
    ('wednesday', 3), ('wed', 3), ('miercoles', 3), ('mie', 3), ('mier', 3),
    ('thursday', 4), ('thu', 4), ('thur', 4), ('thurs', 4), ('jueves', 4), ('jue', 4),
    ('friday', 5), ('fri', 5), ('viernes', 5), ('vie', 5),
    ('saturday', 6), ('sat', 6), ('sabado', 6), ('sab', 6),
    ('sunday', 7), ('sun', 7), ('domingo', 7), ('dom', 7)
),
client AS (
    -- promotion_date: a weekday (English or Spanish, full or short, any case, with or without accents)
    -- or a date (text YYYY-MM-DD, or a date column); anything else is unreadable.
    SELECT c.uid, c.name, c.address, c.latitude, c.longitude, p.text AS promotion_text, w.isodow,
           CASE WHEN w.isodow IS NULL AND p.text ~ '^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}$'
                     AND pg_input_is_valid(p.text, 'date') THEN p.text::date END AS promotion_on
    FROM clients c
    CROSS JOIN LATERAL (SELECT nullif(btrim(c.promotion_date::text, E' .\t\r\n'), '') AS text) p
    LEFT JOIN weekdays w ON w.name = translate(lower(p.text), 'ÁÉÍÓÚÜáéíóúü', 'aeiouuaeiouu')
),
line AS (
    -- An item's price is its own unit price, else its product's.
    SELECT i.order_uid, i.uid, i.quantity, coalesce(i.price, p.price) AS price, p.name, p.brand,
           p.uid IS NULL AS product_missing
    FROM order_items i
    LEFT JOIN products p ON p.uid = i.product_uid
),
items AS (
    SELECT order_uid,
           json_agg(json_build_object('uid', uid, 'quantity', quantity, 'price', price + 0.00, 'name', name,
                                      'brand', brand) ORDER BY uid COLLATE "C") AS items,
           coalesce(sum(quantity * price), 0) AS subtotal,
           count(*) FILTER (WHERE product_missing) AS products_missing,
           count(*) FILTER (WHERE price IS NULL OR quantity IS NULL) AS uncounted,
           count(*) FILTER (WHERE quantity < 0) AS negative
    FROM line
    GROUP BY order_uid
),
brand AS (
    -- The brand with the largest quantity; ties: the larger revenue, then the name (byte order).
    SELECT DISTINCT ON (order_uid) order_uid, brand
    FROM (SELECT order_uid, brand, sum(quantity) AS quantity, sum(quantity * coalesce(price, 0)) AS revenue
          FROM line WHERE brand IS NOT NULL GROUP BY order_uid, brand) b
    ORDER BY order_uid, quantity DESC NULLS LAST, revenue DESC NULLS LAST, brand COLLATE "C"
)
SELECT o.uid AS _id,
       o.uid,
       o.date_of_order,
       o.client_uid,
       c.name AS client_name,
       c.address AS client_address,
       c.latitude,
       c.longitude,
       o.status,
       m.subtotal,
       m.taxes,
       m.subtotal + m.taxes AS total,
       CASE WHEN c.isodow IS NOT NULL THEN extract(isodow FROM o.date_of_order::date) = c.isodow
            WHEN c.promotion_on IS NOT NULL THEN o.date_of_order::date = c.promotion_on END AS is_promotion_day,
       b.brand AS most_popular_brand,
       coalesce(t.items, '[]'::json) AS "OrderItems",
       c.uid IS NULL AS "count: client missing",
       c.promotion_text IS NOT NULL AND c.isodow IS NULL AND c.promotion_on IS NULL
           AS "count: promotion day unreadable",
       coalesce(t.products_missing, 0) AS "count: item of a missing product",
       coalesce(t.uncounted, 0) AS "count: item without a price or quantity",
       coalesce(t.negative, 0) AS "count: item with a negative quantity"
FROM orders o
LEFT JOIN client c ON c.uid = o.client_uid
LEFT JOIN items t ON t.order_uid = o.uid
LEFT JOIN brand b ON b.order_uid = o.uid
-- Taxes: subtotal x rate, rounded half-up (away from zero) to cents.
CROSS JOIN LATERAL (SELECT coalesce(t.subtotal, 0) AS subtotal,
                           round(coalesce(t.subtotal, 0) * %(tax_rate)s::numeric, 2) AS taxes) m
