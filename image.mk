# Included from the Makefile: Ferry's container image, built from the Dockerfile with buildah
# (no daemon) and run for real by tests/image. Base images cannot be pulled here, so the
# default base is a stand-in for the official python:3.11-slim built from Debian's packages
# (tools/build_base_image.sh, cached under $(CACHE)/image); `make image
# BASE_IMAGE=python:3.11-slim` builds on the official one where it can be pulled.
IMAGE ?= localhost/ferry:dev
STANDIN_BASE := localhost/ferry-base:bookworm-python3
BASE_IMAGE ?= $(STANDIN_BASE)
# overlay works for root on these machines (ext4 below); vfs is the fallback where it does not.
BUILDAH_STORAGE_DRIVER ?= overlay

.PHONY: image image-tools image-test

image image-test: export STORAGE_DRIVER := $(BUILDAH_STORAGE_DRIVER)

image-tools:
	tools/install_image_tools.sh

## make image: the stand-in base (once; debootstrap only when its cached tarball is missing),
## then the image (skipped when nothing it is built from changed)
image: image-tools
	@start=$$(date +%s); \
	if [ "$(BASE_IMAGE)" = "$(STANDIN_BASE)" ]; then tools/build_base_image.sh $(STANDIN_BASE); fi && \
	tools/build_image.sh $(IMAGE) $(BASE_IMAGE) && \
	echo "image: $$(( $$(date +%s) - start )) s"

## make image-test: the built image's checks against a Kafka of their own (make test runs them
## with the rest of the suite, against the suite's Kafka)
image-test: $(STAMP) kafka-jars image-tools
	FERRY_IMAGE=$(IMAGE) $(BIN)/pytest tests/image
