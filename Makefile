# smsdispatch: PGXS build of the extension, plus the project's own
# `check` (every test suite) and `demo` targets.

EXTENSION = smsdispatch
EXTVERSION = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" smsdispatch.control)

MODULE_big = smsdispatch
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))
DATA_built = smsdispatch--$(EXTVERSION).sql
# upgrade scripts, and the full scripts of released versions exactly as
# released (the upgrade test installs them)
DATA = $(wildcard smsdispatch--*--*.sql) $(wildcard src/sql/released/*.sql)

# pg_regress suites: every sql/*.sql, in name order
REGRESS = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --temp-config=test/regress.conf

PG_CONFIG ?= pg_config
XML2_CFLAGS := $(shell xml2-config --cflags 2>/dev/null)
PG_CPPFLAGS = -Isrc $(XML2_CFLAGS) -DSMS_MODULE_VERSION='"$(EXTVERSION)"'
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-sign-compare \
	-Wno-missing-field-initializers
SHLIB_LINK = -lcurl -lxml2

EXTRA_CLEAN = smsdispatch--$(EXTVERSION).sql

PGXS := $(wildcard $(shell $(PG_CONFIG) --pgxs 2>/dev/null))

# `make check` and `make demo` are the project's own targets. pgxs defines a
# `check` of its own, and a second recipe for a target makes make warn, so a
# make asked for one of them does not read pgxs: it installs what is missing,
# then builds and installs in makes of their own, which read pgxs.
PROJECT_GOALS = check demo
ifneq ($(filter $(PROJECT_GOALS),$(MAKECMDGOALS)),)
.PHONY: $(PROJECT_GOALS) deps

# Everything: regression, isolation, TAP, fuzz smoke. The suites run as an
# unprivileged user when make runs as root (PostgreSQL refuses root).
check: deps
	$(MAKE) all
	$(MAKE) install
	PG_CONFIG=$(PG_CONFIG) test/run-checks.sh

# The demo installs the extension into the PostgreSQL that pg_config names
# (the system's by default), then runs a throwaway cluster of its own. The
# build, the install and these lines are silent (-s, @) so that the demo's
# story is what shows; a warning still shows, and still fails the build
# (-Werror).
demo: deps
	@$(MAKE) -s all
	@$(MAKE) -s install
	@PG_CONFIG=$(PG_CONFIG) test/demo.sh

deps:
	@./install-deps.sh

# any other goal named beside them (make clean check) is pgxs's
.DEFAULT:
	$(MAKE) $@
else ifeq ($(PGXS),)
# Nothing can be built yet: only the targets that install what is missing.
.DEFAULT_GOAL := check
$(PROJECT_GOALS): deps
	$(MAKE) $@
deps:
	@./install-deps.sh
.PHONY: $(PROJECT_GOALS) deps
else
include $(PGXS)

# pgxs tracks no header: every object is rebuilt when one changes (a struct
# in shared memory laid out twice would be read at the wrong offsets)
$(OBJS): $(wildcard src/*.h)

PGXS_READ = yes

smsdispatch--$(EXTVERSION).sql: $(sort $(wildcard src/sql/*.sql))
	cat $^ > $@

.PHONY: deps fuzz

deps:
	@./install-deps.sh

# A long run of the IP2SMS answer parser's libFuzzer target (make check runs
# a short one): make fuzz FUZZ_RUNS=1000000
FUZZ_RUNS ?= 1000000
fuzz:
	test/fuzz/run-smoke.sh tmp_check/fuzz $(FUZZ_RUNS)
endif

# The modem sidecar: its own program, linking libpq and libgammu
# (GPL-2.0-or-later, so the sidecar's sources are too).
ifneq ($(PGXS),)
MODEM_PROGRAM = src/modem/smsdispatch-modem
MODEM_SRCS = $(sort $(wildcard src/modem/*.c))
MODEM_CFLAGS = -O2 -g -Wall -Wextra -Werror -Wno-unused-parameter \
	-I$(shell $(PG_CONFIG) --includedir) $(shell pkg-config --cflags gammu 2>/dev/null || echo -I/usr/include/gammu)
MODEM_LIBS = -L$(shell $(PG_CONFIG) --libdir) -lpq \
	$(shell pkg-config --libs gammu 2>/dev/null || echo -lGammu -lm)

all: $(MODEM_PROGRAM)

$(MODEM_PROGRAM): $(MODEM_SRCS) src/modem/modem.h
	$(CC) $(MODEM_CFLAGS) -o $@ $(MODEM_SRCS) $(MODEM_LIBS)

install: install-modem
uninstall: uninstall-modem
.PHONY: install-modem uninstall-modem
install-modem: $(MODEM_PROGRAM)
	$(MKDIR_P) '$(DESTDIR)$(bindir)'
	$(INSTALL_PROGRAM) $(MODEM_PROGRAM) '$(DESTDIR)$(bindir)/smsdispatch-modem'
uninstall-modem:
	rm -f '$(DESTDIR)$(bindir)/smsdispatch-modem'

EXTRA_CLEAN += $(MODEM_PROGRAM)

# The HTTP sidecar: Kannel's delivery reports and received SMS, linking
# libpq and libmicrohttpd.
HTTP_PROGRAM = src/http/smsdispatch-http
HTTP_SRCS = $(sort $(wildcard src/http/*.c))
HTTP_CFLAGS = -O2 -g -Wall -Wextra -Werror -Wno-unused-parameter \
	-I$(shell $(PG_CONFIG) --includedir) $(shell pkg-config --cflags libmicrohttpd 2>/dev/null)
HTTP_LIBS = -L$(shell $(PG_CONFIG) --libdir) -lpq \
	$(shell pkg-config --libs libmicrohttpd 2>/dev/null || echo -lmicrohttpd) -lpthread

all: $(HTTP_PROGRAM)

$(HTTP_PROGRAM): $(HTTP_SRCS) src/http/http.h
	$(CC) $(HTTP_CFLAGS) -o $@ $(HTTP_SRCS) $(HTTP_LIBS)

install: install-http
uninstall: uninstall-http
.PHONY: install-http uninstall-http
install-http: $(HTTP_PROGRAM)
	$(MKDIR_P) '$(DESTDIR)$(bindir)'
	$(INSTALL_PROGRAM) $(HTTP_PROGRAM) '$(DESTDIR)$(bindir)/smsdispatch-http'
uninstall-http:
	rm -f '$(DESTDIR)$(bindir)/smsdispatch-http'

EXTRA_CLEAN += $(HTTP_PROGRAM)
endif

# The whole suite on Debian 13 (PostgreSQL 17) and Debian unstable (18), each
# in a debootstrap root cached in /var/cache/smsdispatch-matrix (as root).
.PHONY: check-matrix
check-matrix:
	test/matrix/run.sh
