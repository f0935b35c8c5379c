-- Kannel's callbacks: the delivery report tokens (an HMAC of the sms_log id
-- under a key no other role reads), smsdispatch.delivery_report's mapping
-- of Kannel's DLR types, its refusals, the rows in doubt it settles, and
-- smsdispatch.callback_receive.
SELECT regress.reset();
CREATE ROLE regress_cb_admin IN ROLE smsdispatch_admin;
GRANT USAGE ON SCHEMA regress TO regress_cb_admin;

-- regress.reset() emptied the key table, as nothing else does: without a
-- key no token is made
SELECT regress.try('SELECT smsdispatch.callback_token(1)');
INSERT INTO smsdispatch.callback_key (key) VALUES (smsdispatch.callback_key_generate());
-- one key, of at least 32 bytes
SELECT split_part(regress.try(s), ' DETAIL', 1) FROM unnest(ARRAY[
	$$INSERT INTO smsdispatch.callback_key (key) VALUES (smsdispatch.callback_key_generate())$$,
	$$UPDATE smsdispatch.callback_key SET key = '\x00'$$]) AS s;

SELECT sms_send('+380501000001', 'one'), sms_send('+380501000002', 'two'),
	   sms_send('+380501000003', 'three');
SELECT smsdispatch.callback_token(1) ~ '^[0-9a-f]{64}$' AS hex64,
	   smsdispatch.callback_token(1) = smsdispatch.callback_token(1) AS stable,
	   smsdispatch.callback_token(1) <> smsdispatch.callback_token(2) AS per_row,
	   smsdispatch.callback_token_matches(1, smsdispatch.callback_token(1)) AS matches,
	   smsdispatch.callback_token_matches(1, smsdispatch.callback_token(2)) AS other_row,
	   smsdispatch.callback_token_matches(1, upper(smsdispatch.callback_token(1))) AS upper,
	   smsdispatch.callback_token_matches(1, left(smsdispatch.callback_token(1), 63)) AS short;

-- a new key makes every token new
CREATE TEMP TABLE old_token AS SELECT smsdispatch.callback_token(1) AS t;
UPDATE smsdispatch.callback_key SET key = smsdispatch.callback_key_generate();
SELECT smsdispatch.callback_token_matches(1, t) AS old_token_matches FROM old_token;

-- the admin (the sidecar's role) records reports, but reads no key and
-- makes no token
SET ROLE regress_cb_admin;
SELECT regress.try(s) FROM unnest(ARRAY[
	$$SELECT * FROM smsdispatch.callback_key$$,
	$$SELECT smsdispatch.callback_token(1)$$,
	$$SELECT smsdispatch.callback_token_matches(1, 'x')$$,
	$$SELECT smsdispatch.callback_key_generate()$$,
	$$SELECT smsdispatch.delivery_report(1, repeat('0', 64), 1)$$,
	$$SELECT smsdispatch.delivery_report(1, NULL, 1)$$]) AS s;
RESET ROLE;

-- row 1 queued, as an operator re-queued a row in doubt: a report proves it
-- left, so it is submitted and not sent again; 8 then 1 then 8 again
CREATE TEMP TABLE tok AS
	SELECT id, smsdispatch.callback_token(id) AS t FROM verification.sms_log;
GRANT SELECT ON tok TO regress_cb_admin;
SET ROLE regress_cb_admin;
SELECT smsdispatch.delivery_report(1, t, 8, 'ACK', to_timestamp(1700000000)) FROM tok WHERE id = 1;
SELECT smsdispatch.delivery_report(1, t, 1, NULL, to_timestamp(1700000060)) FROM tok WHERE id = 1;
SELECT smsdispatch.delivery_report(1, t, 8, NULL, to_timestamp(1700000000)) FROM tok WHERE id = 1;
RESET ROLE;
SELECT send_state, gateway_status, status_changed_at = to_timestamp(1700000060) AS at_kept,
	   submitted_at IS NOT NULL AS submitted_at, last_error
  FROM verification.sms_log WHERE id = 1;

-- row 2 unknown after a crash: settled; then a failure (16) is final and
-- keeps the SMSC's answer
UPDATE verification.sms_log SET send_state = 'unknown', last_error = 'worker crashed'
 WHERE id = 2;
SELECT smsdispatch.delivery_report(2, t, 4) FROM tok WHERE id = 2;
SELECT send_state, gateway_status, last_error FROM verification.sms_log WHERE id = 2;
SELECT smsdispatch.delivery_report(2, t, 16, 'NACK/0x0b') FROM tok WHERE id = 2;
SELECT smsdispatch.delivery_report(2, t, 1) FROM tok WHERE id = 2;
SELECT send_state, gateway_status, last_error FROM verification.sms_log WHERE id = 2;

-- row 3 failed: a report changes nothing; a deleted row: no_row; 2 is
-- Undeliverable
UPDATE verification.sms_log SET send_state = 'failed' WHERE id = 3;
SELECT smsdispatch.delivery_report(3, t, 1) FROM tok WHERE id = 3;
SELECT send_state, gateway_status FROM verification.sms_log WHERE id = 3;
SELECT sms_send('+380501000004', 'four');
SELECT smsdispatch.delivery_report(4, smsdispatch.callback_token(4), 2, 'failed');
SELECT gateway_status, last_error FROM verification.sms_log WHERE id = 4;
DELETE FROM verification.sms_log WHERE id = 4;
SELECT smsdispatch.delivery_report(4, smsdispatch.callback_token(4), 1);

-- refusals: another row's token, a status that is no DLR type; nothing
-- changes
SELECT regress.try(s) FROM unnest(ARRAY[
	$$SELECT smsdispatch.delivery_report(3, smsdispatch.callback_token(1), 1)$$,
	$$SELECT smsdispatch.delivery_report(3, smsdispatch.callback_token(3), 3)$$,
	$$SELECT smsdispatch.delivery_report(3, smsdispatch.callback_token(3), NULL)$$]) AS s;
SELECT id, send_state, gateway_status FROM verification.sms_log ORDER BY id;

-- a received SMS goes to sms_receive
SELECT sms_list_create('oncall');
SELECT sms_list_add('oncall', '+380501111111', 1);
SELECT sms_enqueue('Disk full', 'oncall');
UPDATE verification.sms_log SET send_state = 'submitted' WHERE message_id IS NOT NULL;
UPDATE smsdispatch.message_recipient SET status = 'NOT_YET_ACK', sent_at = now();
SET ROLE regress_cb_admin;
SELECT smsdispatch.callback_receive('+380501111111', 'OK 0001 on my way');
SELECT smsdispatch.callback_receive('+380501111111', 'OK 0001 on my way');
RESET ROLE;
SELECT number, state, acked_by FROM smsdispatch.message;

DROP TABLE tok, old_token;
DROP OWNED BY regress_cb_admin;
DROP ROLE regress_cb_admin;
