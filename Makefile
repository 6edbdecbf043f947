# The one entry point: venv proto proto-check lint typecheck test demo bench bench-peers bench-scale
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROTO_SRC := $(wildcard protos/netdist/api/v1/*.proto)

.PHONY: venv proto proto-check lint typecheck test test-fast demo bench bench-peers bench-scale clean

$(BIN)/netdist-server: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(BIN)/netdist-server

define gen_proto
	$(BIN)/python -m grpc_tools.protoc -I protos --plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy --plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc --python_out=$(1) --grpc_python_out=$(1) --mypy_out=$(1) --mypy_grpc_out=$(1) $(PROTO_SRC)
endef

proto: venv
	$(call gen_proto,src)

proto-check: venv
	@tmp=$$(mktemp -d) && $(call gen_proto,$$tmp) && \
	  diff -r -x __init__.py -x __pycache__ -x py.typed $$tmp/netdist/api src/netdist/api && echo "generated protobuf code is up to date"; \
	  rc=$$?; rm -rf $$tmp; exit $$rc

lint: venv
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src tests examples bench

typecheck: venv
	$(BIN)/mypy src
	$(BIN)/mypy tests
	$(BIN)/mypy bench/*.py  # bench/peers/ imports Ray and Celery, which live in their own venv

test: venv proto-check lint typecheck
	$(BIN)/python -m pytest -q

demo: venv
	$(BIN)/python -m netdist.demo

bench: venv
	$(BIN)/python bench/lease_table.py
	$(BIN)/python bench/store_writes.py
	$(BIN)/python bench/throughput.py

# The scale figures (about 20 minutes): bench/README.md, "Scale".
bench-scale: venv
	$(BIN)/python bench/scale.py payload
	$(BIN)/python bench/scale.py handlers --handlers 100
	$(BIN)/python bench/scale.py million
	$(BIN)/python bench/idle_streams.py

PEERS_VENV := bench/.peers-venv

$(PEERS_VENV)/bin/celery: bench/peers/requirements.txt
	$(PY) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install -q -r bench/peers/requirements.txt
	touch $@

# Ray and Celery (+ Redis, if redis-server is installed) against netdist, interleaved, in one sitting.
bench-peers: venv $(PEERS_VENV)/bin/celery
	$(BIN)/python bench/peers.py --peers-python $(PEERS_VENV)/bin/python

clean:
	rm -rf $(VENV) $(PEERS_VENV) build dist netdist-data demo-data
