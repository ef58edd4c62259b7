-- Each person with their earliest trade (the lowest trade_id on a tie) and how many trades and what value
-- they made in all; people without trades are kept, their trade columns NULL and their count 0.
SELECT p.person_id,
       p.name,
       p.joined,
       first.trade_id AS first_trade_id,
       first.symbol AS first_symbol,
       first.quantity AS first_quantity,
       first.price AS first_price,
       first.traded_at AS first_traded_at,
       coalesce(totals.trades, 0) AS trades,
       totals.total_value
FROM people p
LEFT JOIN LATERAL (
    SELECT t.trade_id, t.symbol, t.quantity, t.price, t.traded_at
    FROM trades t
    WHERE t.person_id = p.person_id
    ORDER BY t.traded_at, t.trade_id
    LIMIT 1
) first ON true
LEFT JOIN (
    SELECT person_id, count(*) AS trades, sum(quantity * price) AS total_value
    FROM trades
    GROUP BY person_id
) totals ON totals.person_id = p.person_id;
