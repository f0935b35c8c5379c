-- The eHealth application's verification table (the columns of its
-- verification.verifications), as the tests and benchmarks create it before
-- CREATE EXTENSION smsdispatch.
CREATE SCHEMA verification;
CREATE TABLE verification.verifications (
	id				uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	phone_number	text NOT NULL,
	check_digit		int,
	status			text,
	code			text,
	code_expired_at	timestamptz,
	active			boolean NOT NULL DEFAULT true,
	attempts_count	int NOT NULL DEFAULT 0,
	inserted_at		timestamptz NOT NULL DEFAULT now()
);
