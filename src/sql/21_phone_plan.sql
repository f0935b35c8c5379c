-- The country codes whose national number lengths sms_normalize_phone
-- checks, with those lengths (ITU-T E.164 national plans; a focused subset,
-- other country codes are held to 7 to 15 digits only).
CREATE FUNCTION smsdispatch.phone_plan()
RETURNS TABLE (country_code text, min_digits int, max_digits int)
AS 'MODULE_PATHNAME', 'sms_phone_plan'
LANGUAGE C IMMUTABLE STRICT;

-- everyone who may normalise a number may see the plan it is checked against
GRANT EXECUTE ON FUNCTION smsdispatch.phone_plan()
	TO smsdispatch_sender, smsdispatch_admin, smsdispatch_reader;
