# Thin wrappers; the real logic lives in scripts/.
.PHONY: test demo lint clean

test:
	scripts/test.sh

demo:
	scripts/demo.sh

lint:
	scripts/bootstrap.sh
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

clean:
	rm -rf .venv .demo build dist runtime/*.egg-info pdsno-net-*.tar.gz .mypy_cache .ruff_cache .pytest_cache
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
