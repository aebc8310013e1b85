# SPDX-License-Identifier: Apache-2.0
# ferry: libvixDiskLib.so.8, a drop-in for VMware's VDDK (see vddk/README.md).
# Included from the top Makefile.
#
# ferry's own objects are built -fvisibility=hidden, the whole library is linked with a
# version script that exports VixDiskLib_* only, with the static libraries' symbols kept
# local (--exclude-libs) and bound inside the library (-Bsymbolic), so a consumer's own
# symbol named like one of ours can never be called instead.

VDDK_SRC     := $(wildcard vddk/*.c)
VDDK_OBJS    := $(VDDK_SRC:.c=.o)
VDDK_LIB     := vddk/lib64/libvixDiskLib.so.8
VDDK_LINK    := vddk/lib64/libvixDiskLib.so
VDDK_DRIVER  := tests/vddk/vddk-driver
VDDK_FWD     := tests/vddk/nbdkit-vddkfwd-plugin.so
VDDK_DISTRIB ?= $(PREFIX)/lib64/vmware-vix-disklib-distrib
OBJS         += $(VDDK_OBJS)

all: $(VDDK_LIB) $(VDDK_LINK)
TEST_PROGS += $(VDDK_DRIVER) $(VDDK_FWD)

vddk/%.o: vddk/%.c
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -fvisibility=hidden -c -o $@ $<

# The plugin's read-ahead serves the library's reads too (one implementation).
VDDK_SHARED  := nbdkit-plugin/readahead.o

$(VDDK_LIB): $(VDDK_OBJS) $(VDDK_SHARED) $(PROVIDERS_LIB) $(COMMON_LIB) vddk/vddk.map vddk/vddk.mk
	@$(if $(Q),echo "  LD      $@")
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) -shared $(LDFLAGS) -Wl,-soname,libvixDiskLib.so.8 \
	  -Wl,--version-script=vddk/vddk.map -Wl,-Bsymbolic -Wl,--exclude-libs,ALL \
	  -Wl,-z,defs -Wl,-z,now -o $@ $(VDDK_OBJS) $(VDDK_SHARED) $(PROVIDERS_LIB) $(COMMON_LIB) $(LIBS)

$(VDDK_LINK): $(VDDK_LIB)
	$(Q)ln -sf libvixDiskLib.so.8 $@

# The conformance driver dlopens the library and exports a symbol of the same name as one
# of the library's (-rdynamic), to show that the library never calls it.
$(VDDK_DRIVER): tests/vddk/vddk-driver.c vddk/vixdisklib.h
	@$(if $(Q),echo "  CCLD    $@")
	$(Q)$(CC) $(CPPFLAGS) $(WARN) -pthread $(CFLAGS) $(SAN) $(LDFLAGS) -rdynamic -o $@ $< -ldl

$(VDDK_FWD): tests/vddk/vddkfwd.c vddk/vixdisklib.h
	@$(if $(Q),echo "  CCLD    $@")
	$(Q)$(CC) $(CPPFLAGS) $(WARN) -fPIC -shared -pthread $(CFLAGS) $(LDFLAGS) -o $@ $< -ldl

install-vddk: $(VDDK_LIB)
	install -d $(DESTDIR)$(VDDK_DISTRIB)/lib64
	install -m 0755 $(VDDK_LIB) $(DESTDIR)$(VDDK_DISTRIB)/lib64/libvixDiskLib.so.8
	ln -sf libvixDiskLib.so.8 $(DESTDIR)$(VDDK_DISTRIB)/lib64/libvixDiskLib.so
install: install-vddk

uninstall-vddk:
	rm -f $(DESTDIR)$(VDDK_DISTRIB)/lib64/libvixDiskLib.so.8 \
	  $(DESTDIR)$(VDDK_DISTRIB)/lib64/libvixDiskLib.so
uninstall: uninstall-vddk

clean-vddk:
	rm -f $(VDDK_OBJS) $(VDDK_OBJS:.o=.d) $(VDDK_LIB) $(VDDK_LINK) $(VDDK_DRIVER) $(VDDK_FWD)
	-rmdir vddk/lib64 2>/dev/null
clean-objs: clean-vddk

.PHONY: install-vddk uninstall-vddk clean-vddk

# The conformance driver under ThreadSanitizer (library and driver built with it; check-asan
# runs it under ASan and UBSan with everything else).
check-vddk-tsan:
	$(MAKE) clean-objs
	$(MAKE) SAN="-fsanitize=thread" CFLAGS="-O1 -g" $(VDDK_LIB) $(VDDK_LINK) $(VDDK_DRIVER) $(DOUBLE)
	TSAN_OPTIONS="halt_on_error=1 die_after_fork=0" tests/run-tests.sh -- tests/integration/test-vddk-driver.sh; \
	  rc=$$?; $(MAKE) clean-objs; exit $$rc
.PHONY: check-vddk-tsan

lint: lint-vddk
lint-vddk:
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability --inline-suppr \
	  --suppress=missingIncludeSystem -I. $(VDDK_SRC) tests/vddk/vddk-driver.c tests/vddk/vddkfwd.c
.PHONY: lint-vddk
