# lode: one binary (build/lode), one library (build/liblode.a), cmocka tests, benchmarks.
#
#   make            build/lode and build/liblode.a (CPU backend)
#   make SAN=1      the same with ASan+UBSan, into build-san/
#   make CUDA=1     with the CUDA backend (nvcc, sm_90a + PTX), into build-cuda/
#   make CUDA=1 KTRACE=1
#                   the same with the kernel timeline trace compiled in, into build-cuda-ktrace/:
#                   LODE_CUDA_KTRACE=1 then times every block of each GEMV and decode attention
#                   launch of the first captured graph (scripts/ktrace-summary.py reads it)
#   make ENGINE_ONLY=1
#                   common + kernels + engine and the engine's commands only: needs no
#                   SQLite, FAISS, libmicrohttpd, curl or jansson (the GPU machine has none)
#   make deps       install Debian packages, the FAISS C API and the default models
#   make test       every test (installs what is missing first)
#   make demo       the main job on the defaults
#   make fuzz       libFuzzer targets, each for FUZZ_SECONDS
#   make format / format-check
#
# Sources are found by folder, so a new .c file needs no Makefile change. Tests are
# tests/test_*.c; a test whose source holds the line "lode-test: engine" links only the
# engine library (it must build on the GPU machine).

SAN ?= 0
CUDA ?= 0
KTRACE ?= 0
V ?= 0
# V=1 prints whole command lines; the default prints one short line per step.
ifeq ($(V),1)
Q :=
say = @true
else
Q := @
say = @printf '  %-5s %s\n' $(1) $(2)
endif
ENGINE_ONLY ?= 0
FUZZ_SECONDS ?= 30

ifeq ($(CUDA),1)
B := build-cuda$(if $(filter 1,$(KTRACE)),-ktrace)
else ifeq ($(SAN),1)
B := build-san
else ifeq ($(ENGINE_ONLY),1)
B := build-engine
else
B := build
endif

CC ?= cc
NVCC ?= nvcc
CUDA_HOME ?= /usr/local/cuda
DEPS_DIR ?= .deps

WARN := -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow -Wvla
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -g -O2 -pthread -fPIC -I. $(WARN) -MMD -MP
ifeq ($(SAN),1)
CFLAGS_BASE += -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS_SAN := -fsanitize=address,undefined
endif
ifeq ($(CUDA),1)
CFLAGS_BASE += -DLODE_CUDA=1
endif
CFLAGS ?=
CFLAGS_ALL = $(CFLAGS_BASE) $(CFLAGS)

# Service libraries, through pkg-config (FAISS has none: its C API is built by make deps).
SVC_PKGS := sqlite3 libmicrohttpd libcurl jansson libxml-2.0 poppler-glib md4c libutf8proc libpcre2-8 libcrypto
ENGINE_PKGS := libpcre2-8 libutf8proc
PKG_CFLAGS = $(shell pkg-config --cflags $(1) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(1) 2>/dev/null)
FAISS_CFLAGS := -I$(DEPS_DIR)/faiss-c/include
FAISS_LIBS := $(DEPS_DIR)/faiss-c/lib/libfaiss_c.a -lfaiss -lopenblas -lgomp -lstdc++ -lm

ENGINE_LIBS := $(or $(call PKG_LIBS,$(ENGINE_PKGS)),-lpcre2-8 -lutf8proc) -lm -ldl -lpthread
SVC_LIBS := $(call PKG_LIBS,$(SVC_PKGS)) $(FAISS_LIBS) $(ENGINE_LIBS)
ifeq ($(CUDA),1)
CUDA_LIBS := -L$(CUDA_HOME)/lib64 -lcudart -lcublas -lcublasLt -lstdc++
ENGINE_LIBS += $(CUDA_LIBS)
SVC_LIBS += $(CUDA_LIBS)
endif

# ---- sources ---------------------------------------------------------------------------
ENGINE_SRCS := $(filter-out common/json%.c,$(wildcard common/*.c)) \
               $(wildcard kernels/cpu/*.c) $(wildcard engine/*.c)
SVC_SRCS := $(wildcard common/json*.c) $(wildcard retrieval/*.c) $(wildcard ingest/*.c) \
            $(wildcard compress/*.c) $(wildcard orchestrate/*.c) $(wildcard server/*.c)
CUDA_SRCS := $(if $(filter 1,$(CUDA)),$(wildcard kernels/cuda/*.cu))
# CLI: cli/main.c dispatches; cli/eng_*.c need only the engine, cli/cmd_*.c the services.
CLI_ENGINE_SRCS := cli/main.c $(wildcard cli/eng_*.c)
CLI_SVC_SRCS := $(wildcard cli/cmd_*.c)
# The SQLite loadable extension (built when its source exists).
SQLEXT_SRCS := $(wildcard retrieval/sqlext/*.c)

obj = $(patsubst %.c,$(B)/obj/%.o,$(filter %.c,$(1))) $(patsubst %.cu,$(B)/obj/%.cu.o,$(filter %.cu,$(1)))

ENGINE_OBJS := $(call obj,$(ENGINE_SRCS) $(CUDA_SRCS))
SVC_OBJS := $(call obj,$(SVC_SRCS))
# Files compiled into the binary as text (the store's schema, migrations and examples).
SQL_EMBED := $(sort $(wildcard sql/*.sql)) $(sort $(wildcard sql/migrations/*.sql))
ifneq ($(SQL_EMBED),)
SVC_OBJS += $(call obj,$(B)/gen/sql_files.c)
# the list itself is a prerequisite, so adding, renaming or removing a file regenerates
SQL_EMBED_LIST := $(B)/gen/sql_files.list
$(shell mkdir -p $(B)/gen && echo '$(SQL_EMBED)' | cmp -s - $(SQL_EMBED_LIST) || \
  echo '$(SQL_EMBED)' >$(SQL_EMBED_LIST))
endif
ifeq ($(ENGINE_ONLY),1)
LIB_OBJS := $(ENGINE_OBJS)
CLI_OBJS := $(call obj,$(CLI_ENGINE_SRCS))
LODE_LIBS := $(ENGINE_LIBS)
else
LIB_OBJS := $(ENGINE_OBJS) $(SVC_OBJS)
CLI_OBJS := $(call obj,$(CLI_ENGINE_SRCS) $(CLI_SVC_SRCS))
LODE_LIBS := $(SVC_LIBS)
endif

# Per-folder include flags: the engine sees only its own libraries.
$(B)/obj/common/%.o $(B)/obj/kernels/%.o $(B)/obj/engine/%.o: XFLAGS = $(call PKG_CFLAGS,$(ENGINE_PKGS))
$(B)/obj/common/json%.o $(B)/obj/retrieval/%.o $(B)/obj/ingest/%.o $(B)/obj/compress/%.o \
$(B)/obj/orchestrate/%.o $(B)/obj/server/%.o $(B)/obj/cli/%.o $(B)/obj/tests/%.o: \
  XFLAGS = $(call PKG_CFLAGS,$(SVC_PKGS) cmocka) $(FAISS_CFLAGS)
# SIMD variants: kernels/cpu/*_avx2.c and *_avx512.c are compiled for those ISAs and
# chosen at run time (kernels/cpu/dispatch.c); everything else stays portable x86-64.
$(B)/obj/kernels/cpu/%_avx2.o: XFLAGS += -mavx2 -mfma -mf16c
$(B)/obj/kernels/cpu/%_avx512.o: XFLAGS += -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c
# quant_avx512.c asks for VNNI with `#pragma GCC target`, which clang (make fuzz) ignores
$(B)/obj/kernels/cpu/quant_avx512.o: XFLAGS += -mavx512vnni

$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(call say,CC,$@)
	$(Q)$(CC) $(CFLAGS_ALL) $(XFLAGS) -c $< -o $@

NVCCFLAGS := -O3 -std=c++17 -I. -lineinfo -Xcompiler -fPIC,-Wall,-Wextra,-Werror \
  -Werror all-warnings --expt-relaxed-constexpr \
  -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_90,code=compute_90 \
  $(if $(filter 1,$(KTRACE)),-DLODE_KTRACE)
$(B)/obj/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	$(call say,NVCC,$@)
	$(Q)$(NVCC) $(NVCCFLAGS) -MMD -MP -c $< -o $@

# ---- products --------------------------------------------------------------------------
LIB := $(B)/liblode.a
LODE := $(B)/lode
SQLEXT := $(if $(and $(SQLEXT_SRCS),$(filter 0,$(ENGINE_ONLY))),$(B)/lode_sqlite.so)

.SECONDARY:
.PHONY: all deps model test test-engine demo fuzz format format-check clean bench-ingest \
        check-deps tests
all: $(LODE) $(LIB) $(SQLEXT)

$(LIB): $(LIB_OBJS)
	@mkdir -p $(dir $@)
	$(call say,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(LODE): $(CLI_OBJS) $(LIB)
	$(call say,LD,$@)
	$(Q)$(CC) $(LDFLAGS_SAN) -o $@ $(CLI_OBJS) $(LIB) $(LODE_LIBS) -rdynamic

$(B)/lode_sqlite.so: $(call obj,$(SQLEXT_SRCS)) $(LIB)
	$(call say,LD,$@)
	$(Q)$(CC) $(LDFLAGS_SAN) -shared -Wl,--exclude-libs,ALL -o $@ $(call obj,$(SQLEXT_SRCS)) $(LIB) $(SVC_LIBS)

$(B)/obj/retrieval/sqlext/%.o: XFLAGS = $(call PKG_CFLAGS,$(SVC_PKGS)) $(FAISS_CFLAGS)

$(B)/gen/sql_files.c: $(SQL_EMBED) $(SQL_EMBED_LIST) scripts/embed.sh
	@mkdir -p $(dir $@)
	scripts/embed.sh lode_sql $(SQL_EMBED) >$@.tmp && mv $@.tmp $@

# ---- tests -----------------------------------------------------------------------------
TEST_SRCS := $(wildcard tests/test_*.c)
ENGINE_TEST_SRCS := $(shell grep -l 'lode-test: engine' $(TEST_SRCS) /dev/null 2>/dev/null | grep -v /dev/null)
ifeq ($(ENGINE_ONLY),1)
TEST_SRCS := $(ENGINE_TEST_SRCS)
endif
TEST_BINS := $(patsubst tests/%.c,$(B)/tests/%,$(TEST_SRCS))
TEST_HELPER_OBJS := $(call obj,$(wildcard tests/helpers/*.c))
CMOCKA_LIBS := $(or $(call PKG_LIBS,cmocka),-lcmocka)

$(B)/tests/%: $(B)/obj/tests/%.o $(TEST_HELPER_OBJS) $(LIB)
	@mkdir -p $(dir $@)
	$(call say,LD,$@)
	$(Q)$(CC) $(LDFLAGS_SAN) -o $@ $< $(TEST_HELPER_OBJS) $(LIB) \
	  $(if $(filter $(patsubst $(B)/tests/%,tests/%.c,$@),$(ENGINE_TEST_SRCS)),$(ENGINE_LIBS),$(SVC_LIBS)) \
	  $(CMOCKA_LIBS)
$(B)/obj/tests/%.o: XFLAGS = $(call PKG_CFLAGS,$(SVC_PKGS) cmocka) $(FAISS_CFLAGS)

tests: $(TEST_BINS) $(LODE) $(SQLEXT)

# `make test` sets everything up first, then runs every test binary in parallel.
test: deps
	$(MAKE) -j$$(nproc) tests
	LODE_BUILD=$(B) scripts/run-tests.sh $(TEST_BINS)

# The engine's tests alone, without the service libraries (the GPU machine's path).
test-engine:
	$(MAKE) ENGINE_ONLY=$(if $(filter 1,$(CUDA)),0,1) -j$$(nproc) tests
	LODE_BUILD=$(B) scripts/run-tests.sh $(TEST_BINS)

deps:
	scripts/deps.sh

model:
	scripts/models.sh

demo: deps
	$(MAKE) -j$$(nproc) all
	scripts/demo.sh

# ---- fuzzing (clang, libFuzzer) --------------------------------------------------------
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(patsubst tests/fuzz/%.c,build-fuzz/%,$(FUZZ_SRCS))
fuzz:
	$(MAKE) -j$$(nproc) CC=clang SAN=1 B=build-fuzz CFLAGS='-fsanitize=fuzzer-no-link' build-fuzz/liblode.a
	@for s in $(FUZZ_SRCS); do \
	  n=$$(basename $$s .c); \
	  clang $(CFLAGS_BASE) -fsanitize=fuzzer,address,undefined $(call PKG_CFLAGS,$(SVC_PKGS)) $(FAISS_CFLAGS) \
	    $$s build-fuzz/liblode.a $(SVC_LIBS) -o build-fuzz/$$n || exit 1; \
	done
	scripts/run-fuzz.sh $(FUZZ_SECONDS) $(FUZZ_BINS)

# ---- benchmarks -------------------------------------------------------------------------
$(B)/obj/bench/%.o: XFLAGS = $(call PKG_CFLAGS,$(SVC_PKGS)) $(FAISS_CFLAGS)
$(B)/bench/bench_ingest: $(B)/obj/bench/bench_ingest.o $(LIB)
	@mkdir -p $(dir $@)
	$(call say,LD,$@)
	$(Q)$(CC) $(LDFLAGS_SAN) -o $@ $< $(LIB) $(SVC_LIBS)
# Ingest throughput and search latency on the SQLite documentation, into bench/RESULTS.md.
bench-ingest: deps
	$(MAKE) -j$$(nproc) $(B)/bench/bench_ingest
	bench/bench_ingest.sh $(B)/bench/bench_ingest

# Embedding throughput against sentence-transformers, ingest with embeddings, lexical vs
# dense vs hybrid on the dev set, query latency at the real corpus and at 100k chunks
# (bench/bench_retrieval.sh), into bench/RESULTS.md.
$(B)/bench/bench_embed: $(B)/obj/bench/bench_embed.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_SAN) -o $@ $< $(LIB) $(ENGINE_LIBS)
# Embedding throughput alone, against sentence-transformers, in several rounds with median
# ratios (bench/bench_embed.sh; prints, writes nothing).
.PHONY: bench-embed
bench-embed:
	$(MAKE) -j2 $(B)/bench/bench_embed
	bench/bench_embed.sh $(B)/bench/bench_embed

$(B)/bench/bench_vindex: $(B)/obj/bench/bench_vindex.o $(LIB)
	@mkdir -p $(dir $@)
	$(call say,LD,$@)
	$(Q)$(CC) $(LDFLAGS_SAN) -o $@ $< $(LIB) $(SVC_LIBS)
.PHONY: bench-retrieval
bench-retrieval:
	$(MAKE) -j2 $(B)/bench/bench_embed $(B)/bench/bench_vindex $(B)/lode
	LODE_BUILD=$(B) bench/bench_retrieval.sh $(B)/bench/bench_embed

# HTTP serving under 1..64 concurrent streaming clients (bench/bench_serve.sh), into
# bench/RESULTS.md.
$(B)/bench/bench_serve: $(B)/obj/bench/bench_serve.o
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_SAN) -o $@ $< $(call PKG_LIBS,libcurl)
.PHONY: bench-serve
bench-serve:
	$(MAKE) -j2 $(B)/bench/bench_serve $(B)/lode
	bench/bench_serve.sh $(B)/bench/bench_serve

# ---- formatting ------------------------------------------------------------------------
FORMAT_SRCS = $(shell git ls-files '*.c' '*.h' '*.cu' '*.cuh')
format:
	clang-format -i $(FORMAT_SRCS)
format-check:
	@clang-format --dry-run -Werror $(FORMAT_SRCS) && echo "format-check: $(words $(FORMAT_SRCS)) files clean"

# ---- kernel benchmark (bench/bench_kernels.c; appends to bench/RESULTS.md) ------------
$(B)/bench/bench_kernels: $(B)/obj/bench/bench_kernels.o $(LIB)
	@mkdir -p $(dir $@)
	$(call say,LD,$@)
	$(Q)$(CC) $(LDFLAGS_SAN) -o $@ $< $(LIB) $(ENGINE_LIBS)
.PHONY: bench-kernels
bench-kernels:
	$(MAKE) -j2 $(B)/bench/bench_kernels
	scripts/bench-kernels.sh $(B)/bench/bench_kernels

clean:
	rm -rf build build-san build-cuda build-engine build-fuzz

-include $(shell find $(B) -name '*.d' 2>/dev/null)

# ---- engine benchmark (bench/bench_engine.c against llama.cpp; appends to bench/RESULTS.md)
$(B)/bench/bench_engine: $(B)/obj/bench/bench_engine.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_SAN) -o $@ $< $(LIB) $(ENGINE_LIBS)
.PHONY: bench-engine
bench-engine:
	$(MAKE) -j2 $(B)/bench/bench_engine
	bench/bench_engine.sh $(B)/bench/bench_engine

# ---- serving core benchmark (bench/bench_sched.c; appends to bench/RESULTS.md) ---------
$(B)/bench/bench_sched: $(B)/obj/bench/bench_sched.o $(LIB)
	@mkdir -p $(dir $@)
	$(call say,LD,$@)
	$(Q)$(CC) $(LDFLAGS_SAN) -o $@ $< $(LIB) $(ENGINE_LIBS)
.PHONY: bench-sched
bench-sched:
	$(MAKE) -j2 $(B)/bench/bench_sched
	bench/bench_sched.sh $(B)/bench/bench_sched

# Preemption by recompute vs swap, and embeddings beside generation (bench/bench_share.c).
$(B)/bench/bench_share: $(B)/obj/bench/bench_share.o $(LIB)
	@mkdir -p $(dir $@)
	$(call say,LD,$@)
	$(Q)$(CC) $(LDFLAGS_SAN) -o $@ $< $(LIB) $(ENGINE_LIBS)
.PHONY: bench-share
bench-share:
	$(MAKE) -j2 $(B)/bench/bench_share
	$(B)/bench/bench_share models/SmolLM2-135M-Instruct.Q4_1.gguf models/all-MiniLM-L6-v2

# ---- the CUDA build packed for scripts/gpu-check.sh on a GPU machine without this one's
# libraries (scripts/gpu-prebuilt.sh: prebuilt.tar.xz, which the check unpacks) -----------
.PHONY: gpu-prebuilt
gpu-prebuilt:
	$(MAKE) CUDA=1 ENGINE_ONLY=1 -j$$(nproc) build-cuda/lode build-cuda/tests/test_cuda \
	  build-cuda/tests/test_cuda_synth build-cuda/bench/bench_gpu_serve build-cuda/bench/bench_qmm
	$(MAKE) CUDA=1 KTRACE=1 ENGINE_ONLY=1 -j$$(nproc) build-cuda-ktrace/lode
	scripts/gpu-prebuilt.sh

# ---- the serving core on the GPU (bench/bench_gpu_serve.c; run by scripts/gpu-check.sh) --
$(B)/bench/bench_gpu_serve: $(B)/obj/bench/bench_gpu_serve.o $(LIB)
	@mkdir -p $(dir $@)
	$(call say,LD,$@)
	$(Q)$(CC) $(LDFLAGS_SAN) -o $@ $< $(LIB) $(ENGINE_LIBS)
# the quantized matrix product's paths by token count (bench/bench_qmm.c; gpu-check.sh full)
$(B)/bench/bench_qmm: $(B)/obj/bench/bench_qmm.o $(LIB)
	@mkdir -p $(dir $@)
	$(call say,LD,$@)
	$(Q)$(CC) $(LDFLAGS_SAN) -o $@ $< $(LIB) $(ENGINE_LIBS)
