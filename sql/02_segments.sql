-- sms_segments: GSM-7 160/153 septets, UCS-2 70/67 units, two-unit
-- characters never split between parts.

-- GSM-7 edges
SELECT n, (sms_segments(repeat('a', n))).*
  FROM unnest(ARRAY[0, 1, 160, 161, 306, 307, 459, 460, 1530, 1531]) AS n;
-- the whole basic alphabet beyond ASCII is one septet each
SELECT * FROM sms_segments('@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !"#¤%&''()*+,-./:;<=>?¡ÄÖÑÜ§¿äöñüà');
SELECT * FROM sms_segments(E'line one\nline two\r\n');
-- extension characters count 2
SELECT * FROM sms_segments('^{}\[~]|€');
SELECT * FROM sms_segments(E'\f');
SELECT n, (sms_segments(repeat('€', n))).*
  FROM unnest(ARRAY[80, 81]) AS n;
SELECT (sms_segments(repeat('a', 159) || '[')).*;
-- ... and never split: 152 + [2] + 152 = 306 septets, but the escape pair
-- cannot straddle parts 1 and 2, so it takes three
SELECT (sms_segments(repeat('a', 152) || '€' || repeat('a', 152))).*;
SELECT (sms_segments(repeat('a', 153) || '€' || repeat('a', 151))).*;

-- one character outside GSM-7 makes the whole text UCS-2
SELECT * FROM sms_segments(repeat('a', 69) || 'ж');
SELECT * FROM sms_segments(repeat('a', 70) || 'ж');
SELECT * FROM sms_segments('`');
SELECT * FROM sms_segments(E'tab\there');
SELECT * FROM sms_segments('Привіт');
-- in UCS-2, extension characters are one unit like any other
SELECT * FROM sms_segments('€ж');

-- UCS-2 edges
SELECT n, (sms_segments(repeat('ж', n))).*
  FROM unnest(ARRAY[70, 71, 134, 135, 670, 671]) AS n;
-- emoji are surrogate pairs: 2 units
SELECT * FROM sms_segments('😀');
SELECT n, (sms_segments(repeat('😀', n))).*
  FROM unnest(ARRAY[35, 36, 67]) AS n;
-- ... never split: 66 + [2] + 66 = 134 units, three parts
SELECT (sms_segments(repeat('ж', 66) || '😀' || repeat('ж', 66))).*;
SELECT (sms_segments(repeat('ж', 67) || '😀' || repeat('ж', 65))).*;

SELECT * FROM sms_segments(NULL);
