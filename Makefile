# SPDX-License-Identifier: Apache-2.0
# ferry — top-level GNU Makefile.  `make help` lists the targets.

PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
MANDIR     ?= $(PREFIX)/share/man
DESTDIR    ?=
PLUGINDIR  ?= $(shell pkg-config nbdkit --variable=plugindir 2>/dev/null || echo $(PREFIX)/lib/nbdkit/plugins)

CC         ?= gcc
PKGS       := libcurl libxml-2.0 openssl jansson
CFLAGS     ?= -O2 -g
WARN       := -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Wshadow -Wvla -Werror
CPPFLAGS   += -I. -D_GNU_SOURCE $(shell pkg-config --cflags $(PKGS) nbdkit 2>/dev/null)
ALL_CFLAGS  = $(WARN) -fPIC -pthread -MMD -MP $(CFLAGS) $(SAN)
LIBS        = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -pthread
LDFLAGS    += $(SAN)

ifeq ($(V),1)
Q :=
else
Q := @
endif

COMMON_SRC    := $(wildcard common/*.c)
PROVIDERS_SRC := $(wildcard providers/*.c providers/vsphere/*.c providers/rhv/*.c)
DISKCACHE_SRC := $(wildcard diskcache/*.c)
PLUGIN_SRC    := $(wildcard nbdkit-plugin/*.c)
FUSE_SRC      := $(wildcard fuse/*.c)
ORCH_SRC      := $(wildcard orchestrator/*.c)
CONVERT_SRC   := $(wildcard convert/*.c)
UNIT_SRC      := $(wildcard tests/unit/test-*.c)

COMMON_LIB    := common/libcommon.a
PROVIDERS_LIB := providers/libproviders.a
DISKCACHE_LIB := diskcache/libdiskcache.a
CONVERT_LIB   := convert/libconvert.a
PLUGIN        := nbdkit-plugin/nbdkit-ferry-plugin.so
FERRYFS       := fuse/ferryfs
FERRY         := orchestrator/ferry
UNIT_TESTS    := $(UNIT_SRC:.c=)
DOUBLE        := tests/doubles/vsphere/vsphere-double

# Libraries in dependency order (DESIGN.md): common <- providers <- diskcache.
CORE_LIBS     := $(if $(DISKCACHE_SRC),$(DISKCACHE_LIB)) $(PROVIDERS_LIB) $(COMMON_LIB)
FUSE_PKGS     := fuse3 libnbd jansson libguestfs
FUSE_CFLAGS    = $(shell pkg-config --cflags $(FUSE_PKGS) 2>/dev/null)
FUSE_LIBS      = $(shell pkg-config --libs $(FUSE_PKGS) 2>/dev/null)

OBJS := $(COMMON_SRC:.c=.o) $(PROVIDERS_SRC:.c=.o) $(DISKCACHE_SRC:.c=.o) $(PLUGIN_SRC:.c=.o) \
        $(FUSE_SRC:.c=.o) $(ORCH_SRC:.c=.o) $(CONVERT_SRC:.c=.o) $(UNIT_SRC:.c=.o)

.PHONY: all deps check check-unit check-integration check-asan check-valgrind bench demo \
        install uninstall lint clean clean-objs help double

all: $(PLUGIN) $(FERRYFS) $(FERRY)

%.o: %.c
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -c -o $@ $<

$(COMMON_LIB): $(COMMON_SRC:.c=.o)
	@$(if $(Q),echo "  AR      $@")
	$(Q)$(AR) rcs $@ $^

$(PROVIDERS_LIB): $(PROVIDERS_SRC:.c=.o)
	@$(if $(Q),echo "  AR      $@")
	$(Q)$(AR) rcs $@ $^

$(DISKCACHE_LIB): $(DISKCACHE_SRC:.c=.o)
	@$(if $(Q),echo "  AR      $@")
	$(Q)$(AR) rcs $@ $^

$(CONVERT_LIB): $(CONVERT_SRC:.c=.o)
	@$(if $(Q),echo "  AR      $@")
	$(Q)$(AR) rcs $@ $^

# Only plugin_init and the -D debug flags are exported (nbdkit-plugin/plugin.syms).
$(PLUGIN): $(PLUGIN_SRC:.c=.o) $(CORE_LIBS) nbdkit-plugin/plugin.syms
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -shared $(LDFLAGS) -Wl,--version-script=nbdkit-plugin/plugin.syms -o $@ \
	  $(PLUGIN_SRC:.c=.o) $(CORE_LIBS) $(LIBS)

# ferryfs speaks NBD only: common + libnbd + libfuse3 (+ libguestfs for inspection.json).
fuse/%.o: fuse/%.c
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(CPPFLAGS) $(FUSE_CFLAGS) $(ALL_CFLAGS) -c -o $@ $<

$(FERRYFS): $(FUSE_SRC:.c=.o) $(COMMON_LIB)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $(FUSE_SRC:.c=.o) $(COMMON_LIB) $(FUSE_LIBS) $(LIBS)

# ferry links the providers and the cache directly: it copies in-process, no NBD hop;
# conversion (libconvert) runs virt-v2v and qemu's tools as children.
$(FERRY): $(ORCH_SRC:.c=.o) $(CONVERT_LIB) $(CORE_LIBS)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $(ORCH_SRC:.c=.o) $(CONVERT_LIB) $(CORE_LIBS) $(LIBS) -lm

# Unit tests link the libraries; a test may wrap seams with -Wl,--wrap= listed in
# tests/unit/test-NAME.wrap (one symbol per line).
# The plugin's read-ahead needs no nbdkit: unit tests link it.
UNIT_EXTRA := nbdkit-plugin/readahead.o
UNIT_WRAP = $(wildcard tests/unit/test-$*.wrap)
tests/unit/test-%: tests/unit/test-%.o $(UNIT_EXTRA) $(CONVERT_LIB) $(CORE_LIBS)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $< $(UNIT_EXTRA) $(CONVERT_LIB) $(CORE_LIBS) $(LIBS) -lm -lcmocka \
	  $(if $(UNIT_WRAP),$(addprefix -Wl$(comma)--wrap=,$(shell cat $(UNIT_WRAP))))
comma := ,
# The diskcache tests (test-dcache*) share a fixture: its I/O seam wraps the calls that
# tests/unit/dcache-fixture.wrap lists.
DCACHE_TESTS := $(filter tests/unit/test-dcache%,$(UNIT_TESTS))
OBJS += tests/unit/dcache-fixture.o
$(DCACHE_TESTS): tests/unit/dcache-fixture.o
$(DCACHE_TESTS): UNIT_EXTRA += tests/unit/dcache-fixture.o
$(DCACHE_TESTS): UNIT_WRAP = tests/unit/dcache-fixture.wrap

double: $(DOUBLE)
$(DOUBLE): $(wildcard tests/doubles/vsphere/*.go) tests/doubles/vsphere/build.sh
	@$(if $(Q),echo "  GO      $@")
	$(Q)tests/doubles/vsphere/build.sh $@

deps:
	$(Q)./scripts/deps.sh

# check installs what is missing first, then builds in a fresh make (so pkg-config sees the
# newly installed libraries), then runs unit and integration tests.
TEST_PROGS := $(UNIT_TESTS) $(DOUBLE) tests/integration/http-fetch tests/integration/vs-probe
check: deps
	$(Q)$(MAKE) --no-print-directory all $(TEST_PROGS)
	$(Q)tests/run-tests.sh $(UNIT_TESTS) -- $(sort $(wildcard tests/integration/test-*.sh))

check-unit: $(UNIT_TESTS)
	$(Q)tests/run-tests.sh $(UNIT_TESTS) --

check-integration: all $(TEST_PROGS)
	$(Q)tests/run-tests.sh -- $(sort $(wildcard tests/integration/test-*.sh))

# A separate build with AddressSanitizer and UBSan; the plugin is loaded by nbdkit, so the
# ASan runtime is preloaded for the integration tests.
check-asan:
	$(MAKE) clean-objs
	$(MAKE) SAN="-fsanitize=address,undefined -fno-omit-frame-pointer" \
	  CFLAGS="-O1 -g" all $(TEST_PROGS)
	FERRY_ASAN=1 tests/run-tests.sh $(UNIT_TESTS) -- $(sort $(wildcard tests/integration/test-*.sh)); \
	  rc=$$?; $(MAKE) clean-objs; exit $$rc

# Unit tests, and the integration tests that start nbdkit with the plugin or ferryfs, under
# valgrind memcheck (tests/run-tests.sh; suppressions in tests/valgrind.supp).  Not
# test-cache-crash: it kills nbdkit on purpose, and a killed process cannot be checked.
# Not test-ferryfs-nbd and -guest: they check inspection.json, and ferryfs's inspection
# child re-executes /proc/self/exe, which under valgrind is valgrind's own tool.  Not the
# unit test test-wipe: it scans the whole process's memory for a secret after free, and
# under valgrind the allocator it checks is replaced and valgrind's own buffers hold copies.
VALGRIND_UNIT_TESTS := $(filter-out %/test-wipe,$(UNIT_TESTS))
VALGRIND_TESTS := $(filter-out %/test-cache-crash.sh %/test-ferryfs-nbd.sh \
                    %/test-ferryfs-guest.sh,$(sort $(wildcard \
                    tests/integration/test-plugin-*.sh tests/integration/test-cache-*.sh \
                    tests/integration/test-ferryfs-*.sh)))
check-valgrind: all $(TEST_PROGS)
	$(Q)FERRY_VALGRIND=1 tests/run-tests.sh $(VALGRIND_UNIT_TESTS) -- $(VALGRIND_TESTS)

bench: deps
	$(Q)$(MAKE) --no-print-directory all $(DOUBLE)
	$(Q)bench/run.sh

demo: deps
	$(Q)$(MAKE) --no-print-directory all $(DOUBLE)
	$(Q)scripts/demo.sh

MANPAGES := nbdkit-plugin/nbdkit-ferry-plugin.1 fuse/ferryfs.1 orchestrator/ferry.1

install: all
	install -d $(DESTDIR)$(PLUGINDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1
	install -m 0755 $(PLUGIN) $(DESTDIR)$(PLUGINDIR)/
	install -m 0755 $(FERRYFS) $(FERRY) $(DESTDIR)$(BINDIR)/
	install -m 0644 $(MANPAGES) $(DESTDIR)$(MANDIR)/man1/

uninstall:
	rm -f $(DESTDIR)$(PLUGINDIR)/nbdkit-ferry-plugin.so $(DESTDIR)$(BINDIR)/ferryfs \
	  $(DESTDIR)$(BINDIR)/ferry
	rm -f $(addprefix $(DESTDIR)$(MANDIR)/man1/,$(notdir $(MANPAGES)))

%.1: %.pod
	$(Q)pod2man --section=1 --center=ferry --name=$(basename $(notdir $@)) $< > $@
all: $(MANPAGES)

SHELL_SCRIPTS = $(shell git ls-files '*.sh' .ci/run 2>/dev/null)
C_FILES = $(shell git ls-files '*.c' '*.h' 2>/dev/null)
lint:
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability --inline-suppr \
	  --suppress=missingIncludeSystem -I. $(COMMON_SRC) $(PROVIDERS_SRC) $(DISKCACHE_SRC) \
	  $(PLUGIN_SRC) $(FUSE_SRC) $(ORCH_SRC) $(CONVERT_SRC)
	shellcheck -x -P SCRIPTDIR $(SHELL_SCRIPTS)
	clang-format --dry-run --Werror $(C_FILES)

clean-objs:
	rm -f $(OBJS) $(OBJS:.o=.d) $(COMMON_LIB) $(PROVIDERS_LIB) $(DISKCACHE_LIB) $(CONVERT_LIB) $(PLUGIN) \
	  $(FERRYFS) $(FERRY) $(UNIT_TESTS) \
	  tests/integration/http-fetch tests/integration/vs-probe

clean: clean-objs
	rm -f $(DOUBLE) $(MANPAGES)
	rm -rf tests/doubles/vsphere/.build

help:
	@echo "make              build ferry, ferryfs, the nbdkit plugin and libvixDiskLib.so.8"
	@echo "make deps         install the Debian packages for build, tests and benchmarks"
	@echo "make check        unit then integration tests; ends with 'N passed, N failed, N skipped'"
	@echo "make check-unit   only the cmocka unit tests"
	@echo "make check-asan   unit and integration tests built with ASan and UBSan"
	@echo "make check-valgrind  unit, plugin, cache and ferryfs tests under valgrind memcheck"
	@echo "make fuzz         libFuzzer targets, each for FUZZ_SECONDS (fuzz/README.md)"
	@echo "make bench        benchmarks against peers measured in the same run"
	@echo "make demo         a real guest migrated warm, inspected, converted and booted"
	@echo "make install      install everything (DESTDIR, PREFIX; the plugin into nbdkit's plugindir)"
	@echo "make lint         cppcheck, shellcheck, clang-format"
	@echo "make container    the importer image localhost/ferry:latest (buildah; cached by its inputs)"
	@echo "make vddk-image   the VDDK init image localhost/ferry-vddk:latest (copies the library to /opt)"
	@echo "make clean        remove build products"
	@echo "V=1               show full command lines"

include vddk/vddk.mk
include container/container.mk
include fuzz/fuzz.mk

-include $(OBJS:.o=.d)

# http test driver
tests/integration/http-fetch: tests/integration/http-fetch.c $(COMMON_LIB)
	@$(if $(Q),echo "  CCLD    $@")
	$(Q)$(CC) $(CPPFLAGS) $(WARN) -pthread $(CFLAGS) $(SAN) $(LDFLAGS) -o $@ $< $(COMMON_LIB) $(LIBS)

# Provider test driver (runs the vSphere provider without nbdkit, for check-asan too)
tests/integration/vs-probe: tests/integration/vs-probe.c $(PROVIDERS_LIB) $(COMMON_LIB)
	@$(if $(Q),echo "  CCLD    $@")
	$(Q)$(CC) $(CPPFLAGS) $(WARN) -pthread $(CFLAGS) $(SAN) $(LDFLAGS) -o $@ $< $(PROVIDERS_LIB) $(COMMON_LIB) $(LIBS)
