-- sms_normalize_phone: E.164 from what people type.
SELECT p, sms_normalize_phone(p)
  FROM unnest(ARRAY['+380501234567', '+380 (50) 123-45-67', ' +380.50.123.45.67',
				   '00380501234567', '00 44 20 7946 0958', '+1 (202) 555-0123',
				   '+44/20/7946/0958', '+[380] 50 1234567', '+2345678',
				   '+234567890123456']) AS p;

-- national numbers need smsdispatch.default_country_code
SHOW smsdispatch.default_country_code;
SELECT regress.try($$SELECT sms_normalize_phone('0501234567')$$);
SET smsdispatch.default_country_code = '380';
SELECT p, sms_normalize_phone(p)
  FROM unnest(ARRAY['0501234567', '050 123 45 67', '501234567', '380501234567',
				   '+380501234567', '0044 20 7946 0958']) AS p;
SET smsdispatch.default_country_code = '1';
SELECT sms_normalize_phone('(202) 555-0123'), sms_normalize_phone('1 202 555 0123');
-- the country code itself is checked
SELECT regress.try($$SET smsdispatch.default_country_code = '+380'$$);
SELECT regress.try($$SET smsdispatch.default_country_code = '0380'$$);
SELECT regress.try($$SET smsdispatch.default_country_code = '3801'$$);
RESET smsdispatch.default_country_code;

-- bad numbers: 22023, the value in the message, why in the detail
SELECT p, regress.try(format('SELECT sms_normalize_phone(%L)', p))
  FROM unnest(ARRAY['', '   ', '+', 'abc', '+38050123456a', '+380 50 123 45 67 ext 8',
				   '++380501234567', '+380-50-123-45-67#', '+234567', '+2345678901234567',
				   '+0501234567', '00', '0050', '+38050１２３４５６７']) AS p;
SELECT regress.try($$SELECT sms_normalize_phone(NULL)$$);

-- national number lengths of the country codes in smsdispatch.phone_plan():
-- a typed "12345" with default_country_code 380 is refused, not sent
SET smsdispatch.default_country_code = '380';
SELECT regress.try($$SELECT sms_normalize_phone('12345')$$);
SELECT regress.try($$SELECT sms_normalize_phone('050 123 45 6')$$);
SELECT regress.try($$SELECT sms_normalize_phone('050 123 45 678')$$);
RESET smsdispatch.default_country_code;
SELECT regress.try($$SELECT sms_normalize_phone('+1 202 555 012')$$);
SELECT regress.try($$SELECT sms_normalize_phone('+44 20 7946 09581')$$);
-- every rule of the table: its shortest and longest national numbers pass,
-- one digit fewer or more is refused (SQLSTATE 22023, the value in the message)
SELECT p.country_code, p.min_digits, p.max_digits,
	   sms_normalize_phone('+' || p.country_code || repeat('5', p.min_digits))
		 = '+' || p.country_code || repeat('5', p.min_digits) AS shortest_ok,
	   sms_normalize_phone('+' || p.country_code || repeat('5', p.max_digits))
		 = '+' || p.country_code || repeat('5', p.max_digits) AS longest_ok,
	   smsdispatch.try_normalize_phone('+' || p.country_code || repeat('5', p.min_digits - 1)) IS NULL
		 AS shorter_refused,
	   smsdispatch.try_normalize_phone('+' || p.country_code || repeat('5', p.max_digits + 1)) IS NULL
		 AS longer_refused
  FROM smsdispatch.phone_plan() p ORDER BY p.country_code;
-- a country code outside the table is held to 7 to 15 digits only
SELECT sms_normalize_phone('+4930123'), sms_normalize_phone('+49301234567890');
