# The newcomer's commands. Each one installs missing Debian packages first.
#   make run      start the main job: twined serving echo on tcp:8000 (see README)
#   make test     build everything and run every test (all reactor backends)
#   make asan     the same suite under ASan + UBSan, built with clang (make test uses gcc)
#   make bench    side-by-side benchmarks against libuv (prints JSON lines)
#   make fuzz     build the libFuzzer targets and run each for a short while
#   make install  install the library, headers and pkg-config file (PREFIX=/usr/local)

BUILD      ?= build
PREFIX     ?= /usr/local
JOBS       ?= $(shell nproc)
FUZZ_SECS  ?= 20
CMAKE_ARGS ?=

.PHONY: all deps build run test asan bench fuzz install format clean

all: build

deps:
	@./scripts/install-deps.sh

$(BUILD)/CMakeCache.txt: | deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=$(PREFIX) $(CMAKE_ARGS)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

run: build
	./$(BUILD)/bin/twined echo --listen tcp:8000

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

asan: deps
	cmake -S . -B build-asan -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DTWINE_SANITIZE=ON $(CMAKE_ARGS)
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ctest --output-on-failure -j $(JOBS)

bench: build
	./scripts/run-benchmarks.sh $(BUILD)

fuzz: deps
	cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DTWINE_FUZZ=ON $(CMAKE_ARGS)
	cmake --build build-fuzz -j $(JOBS)
	./scripts/run-fuzzers.sh build-fuzz $(FUZZ_SECS)

install: build
	cmake --install $(BUILD)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) build-asan build-fuzz
