"""The trading experiment runner: entry modules on top (``__main__``, ``task``, ``sweep``, ``report``), then
``experiment``, then one subpackage per concern (``tracking``, ``engine``, ``ml``), and pure leaves."""
