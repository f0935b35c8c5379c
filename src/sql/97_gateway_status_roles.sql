-- The gateway state classifier is called by the domain
-- smsdispatch.gateway_status (an admin who corrects a row's status) and by
-- the reports (smsdispatch.sms_outcome, inlined into a reader's query).
GRANT EXECUTE ON FUNCTION smsdispatch.gateway_status_class(text)
	TO smsdispatch_sender, smsdispatch_admin, smsdispatch_reader;
