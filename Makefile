# The two commands of the README: `make demo` and `make test`.  Each one
# builds its own virtual environment from PyPI first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TRIAL_ARGS ?= tests

.PHONY: install demo test docs bench clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py tsagg/*.py twisted/plugins/*.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet '.[test]'
	# Twisted caches the plugin list; rebuild it now, as root or not.
	$(PY) -c "from twisted.plugin import getPlugins; from twisted.application.service import IServiceMaker; assert 'tsagg' in [p.tapname for p in getPlugins(IServiceMaker)]"
	touch $@

demo: install
	$(PY) -m tsagg.demo

test: install
	$(PY) -m twisted.trial $(TRIAL_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp demo-data
