# SPDX-License-Identifier: Apache-2.0
# ferry — libFuzzer targets for the parsers of untrusted input (fuzz/README.md).
#
# Included from the top Makefile.  Everything is built with clang under fuzz/build/, apart
# from the normal gcc build: the project's sources are compiled again with
# -fsanitize=fuzzer-no-link,address,undefined into one archive, and each target links it.
#
#   make fuzz                    build every target and run each for FUZZ_SECONDS
#   make fuzz/build/fuzz-NAME    build one target
#   fuzz/run.sh NAME -runs=N     run one target longer (see fuzz/README.md)

FUZZ_CC      ?= clang
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined \
                -fno-omit-frame-pointer
FUZZ_CFLAGS  := -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Wshadow -Wvla -Werror \
                -g -O1 $(FUZZ_SAN)
FUZZ_CPPFLAGS = -I. -D_GNU_SOURCE $(shell pkg-config --cflags $(PKGS) jansson 2>/dev/null)
FUZZ_LIBS     = $(shell pkg-config --libs $(PKGS) jansson 2>/dev/null) -pthread
FUZZ_SECONDS ?= 8

FUZZ_TARGETS := soap vsphere cbt meta vmjson plan
FUZZ_BINS    := $(addprefix fuzz/build/fuzz-,$(FUZZ_TARGETS))

# The sources under test: the libraries, plus the two parsers that live in the programs.
FUZZ_LIB_SRC := $(COMMON_SRC) $(PROVIDERS_SRC) $(DISKCACHE_SRC) orchestrator/plan.c \
                fuse/vmjson.c
FUZZ_LIB_OBJ := $(addprefix fuzz/build/,$(FUZZ_LIB_SRC:.c=.o))
FUZZ_LIB     := fuzz/build/libferry-fuzz.a

# Seams that each target replaces (-Wl,--wrap=SYMBOL), one symbol per line.
FUZZ_WRAP = $(if $(wildcard fuzz/fuzz-$(1).wrap),\
              $(addprefix -Wl$(comma)--wrap=,$(shell cat fuzz/fuzz-$(1).wrap)))

fuzz/build/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZCC  $@")
	$(Q)$(FUZZ_CC) $(FUZZ_CPPFLAGS) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP \
	  -c -o $@ $<

$(FUZZ_LIB): $(FUZZ_LIB_OBJ)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && $(AR) rcs $@ $^

fuzz/build/fuzz-%: fuzz/fuzz-%.c fuzz/fuzz.h $(FUZZ_LIB) $(wildcard fuzz/fuzz-%.wrap)
	@$(if $(Q),echo "  FUZZLD  $@")
	$(Q)$(FUZZ_CC) $(FUZZ_CPPFLAGS) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_LIB) \
	  $(FUZZ_LIBS) $(call FUZZ_WRAP,$*)

# fuzz-cbt is fuzz-vsphere's harness fixed on QueryChangedDiskAreas.
fuzz/build/fuzz-cbt: fuzz/fuzz-vsphere.c fuzz/fuzz.h $(FUZZ_LIB) fuzz/fuzz-vsphere.wrap
	@$(if $(Q),echo "  FUZZLD  $@")
	$(Q)$(FUZZ_CC) $(FUZZ_CPPFLAGS) $(FUZZ_CFLAGS) -DFUZZ_ONLY_CBT -fsanitize=fuzzer -o $@ \
	  $< $(FUZZ_LIB) $(FUZZ_LIBS) $(call FUZZ_WRAP,vsphere)

fuzz-build: $(FUZZ_BINS)

fuzz: fuzz-build
	$(Q)fuzz/run.sh --seconds $(FUZZ_SECONDS) $(FUZZ_TARGETS)

clean-fuzz:
	rm -rf fuzz/build

.PHONY: fuzz fuzz-build clean-fuzz

-include $(FUZZ_LIB_OBJ:.o=.d)
