-- Privileges on the modem sidecar's goodbye (70_modem.sql): the sidecar logs
-- in as an admin. Here, not beside the function, because the roles are made
-- in 90_roles.sql.
GRANT EXECUTE ON FUNCTION smsdispatch.modem_goodbye(text) TO smsdispatch_admin;
