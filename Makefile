# The two commands of the README: `make demo` and `make test`.  Each one
# builds its own virtual environment from PyPI first.  `make docs` builds
# the Sphinx docs, warnings being errors.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TRIAL_ARGS ?= tests
# The OCS integration tests need a crossbar router.  It lives in a venv of
# its own, so that its many pins never meet tsagg's; the tests only run its
# executable.
CROSSBAR_VENV ?= .venv-crossbar
CROSSBAR := $(CROSSBAR_VENV)/bin/crossbar
# The test against SO's own readers (sotodlib's G3tSmurf, socs' suprsync)
# runs them in a venv of their own: sotodlib pins its own numpy and so3g.
SO_VENV ?= .venv-so
SO_PY := $(SO_VENV)/bin/python

.PHONY: install crossbar so-venv test-so demo test docs bench faults clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py tsagg/*.py twisted/plugins/*.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet '.[test]'
	# Twisted caches the plugin list; rebuild it now, as root or not.
	$(PY) -c "from twisted.plugin import getPlugins; from twisted.application.service import IServiceMaker; assert 'tsagg' in [p.tapname for p in getPlugins(IServiceMaker)]"
	touch $@

crossbar: $(CROSSBAR_VENV)/.installed

$(CROSSBAR_VENV)/.installed:
	test -x $(CROSSBAR_VENV)/bin/python || $(PYTHON) -m venv $(CROSSBAR_VENV)
	$(CROSSBAR_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CROSSBAR_VENV)/bin/python -m pip install --quiet crossbar
	$(CROSSBAR) version > /dev/null
	touch $@

so-venv: $(SO_VENV)/.installed

$(SO_VENV)/.installed: tests/so/requirements.txt
	test -x $(SO_PY) || $(PYTHON) -m venv $(SO_VENV)
	$(SO_PY) -m pip install --quiet --upgrade pip
	$(SO_PY) -m pip install --quiet -r tests/so/requirements.txt
	$(SO_PY) -c "import so3g; import sotodlib.io.load_smurf, socs.db.suprsync"
	touch $@

# tsagg's archive read by sotodlib's G3tSmurf and registered with suprsync
# (tests/test_so_readers.py) alone; `make test` runs it with the rest.
test-so: install so-venv
	TSAGG_SO_PYTHON=$(abspath $(SO_PY)) TSAGG_REQUIRE_SO=1 \
		$(PY) -m twisted.trial tests.test_so_readers

demo: install
	$(PY) -m tsagg.demo

test: install crossbar so-venv
	TSAGG_CROSSBAR=$(abspath $(CROSSBAR)) TSAGG_REQUIRE_CROSSBAR=1 \
	TSAGG_SO_PYTHON=$(abspath $(SO_PY)) TSAGG_REQUIRE_SO=1 \
		$(PY) -m twisted.trial $(TRIAL_ARGS)

docs: install
	$(PY) -m pip install --quiet -r docs/requirements.txt
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html

# The benchmark against spt3g's C++ G3Reader -> G3Writer (bench/run.py):
# prints every target as PASS/MISS, writes bench/results/ and the docs page.
# `make bench BENCH_ARGS=--quick` for a short run.
BENCH_ARGS ?=
bench: install
	$(PY) -m pip install --quiet matplotlib py-spy
	$(PY) bench/run.py --docs docs/performance.rst $(BENCH_ARGS)

# The fault-injection suite alone, and its table in docs/faults.rst.
# Outages last 60 s here (4 s in `make test`); the session storm has
# 200,000 one-frame sessions (20,000 in `make test`).  The breaks in a
# session (tests/test_session_continuity.py) are read back with SO's readers.
faults: install so-venv
	TSAGG_FAULT_OUTAGE=60 TSAGG_FAULT_STORM=200000 \
	TSAGG_SO_PYTHON=$(abspath $(SO_PY)) TSAGG_REQUIRE_SO=1 \
		$(PY) -m tests.fault_report --docs docs/faults.rst

clean:
	rm -rf $(VENV) $(CROSSBAR_VENV) $(SO_VENV) docs/_build build *.egg-info _trial_temp demo-data
