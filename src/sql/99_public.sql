-- PUBLIC may call no function of the schema smsdispatch: the files above
-- grant each to the roles that need it, and this last revoke closes every
-- function by default, including one a later file forgets.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA smsdispatch FROM PUBLIC;
