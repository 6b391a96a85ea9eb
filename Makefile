# The two entry points of the README, plus the pieces they are made of.
#   make demo   installs what is needed, builds, starts a local cluster and
#               runs the reference pipelines
#   make test   installs what is needed, builds with ASan+UBSan, runs every test
JOBS ?= 2

.PHONY: deps build demo test bench clean

deps:
	./scripts/install-deps.sh

build: deps
	cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build build -j$(JOBS)

demo: build
	./scripts/demo.sh

test: deps
	cmake -S . -B build-test -DCMAKE_BUILD_TYPE=Debug -DTR_SANITIZE=ON >/dev/null
	cmake --build build-test -j$(JOBS)
	cd build-test && ctest --output-on-failure -j$(JOBS) --timeout 600

bench:
	TRELLIS_BENCH_DEPS=1 ./scripts/install-deps.sh
	./bench/run.sh

clean:
	rm -rf build build-test
