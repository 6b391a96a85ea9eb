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

# The demo's screen shows its steps and results; apt's, dpkg's and the
# compiler's output goes to $(DEMO_LOG).
DEMO_LOG ?= build/make-demo.log
demo:
	@./scripts/step.sh $(DEMO_LOG) "1/3 Debian packages" ./scripts/install-deps.sh
	@./scripts/step.sh $(DEMO_LOG) "2/3 configure" cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
	@./scripts/step.sh $(DEMO_LOG) "3/3 build" cmake --build build -j$(JOBS)
	@./scripts/demo.sh

test: deps
	cmake -S . -B build-test -DCMAKE_BUILD_TYPE=Debug -DTR_SANITIZE=ON >/dev/null
	cmake --build build-test -j$(JOBS)
	cd build-test && ctest --output-on-failure -j$(JOBS) --timeout 600

bench:
	TRELLIS_BENCH_DEPS=1 ./scripts/install-deps.sh
	./bench/run.sh

clean:
	rm -rf build build-test
