pytest_plugins = ["tests.runtime.postgres_server"]
