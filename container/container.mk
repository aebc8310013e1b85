# SPDX-License-Identifier: Apache-2.0
# ferry's images (container/README.md), built with buildah from a debootstrap base; both
# are cached by their inputs, so a second run only prints the image id and size.
# Included from the top Makefile.

container: deps
	$(Q)container/build.sh

vddk-image: deps
	$(Q)container/build.sh --vddk

.PHONY: container vddk-image
