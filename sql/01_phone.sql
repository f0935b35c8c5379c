-- sms_normalize_phone: E.164 from what people type.
SELECT p, sms_normalize_phone(p)
  FROM unnest(ARRAY['+380501234567', '+380 (50) 123-45-67', ' +380.50.123.45.67',
				   '00380501234567', '00 44 20 7946 0958', '+1 (202) 555-0123',
				   '+44/20/7946/0958', '+[380] 50 1234567', '+1234567',
				   '+123456789012345']) AS p;

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
				   '++380501234567', '+380-50-123-45-67#', '+123456', '+1234567890123456',
				   '+0501234567', '00', '0050', '+38050１２３４５６７']) AS p;
SELECT regress.try($$SELECT sms_normalize_phone(NULL)$$);
