"""Root of the test tree: being a conftest.py outside any package, pytest puts tests/ on sys.path,
so every test folder imports the shared helpers `tools_loader` and `tiny_config` by name."""
