"""Settings of the example gallery: every example runs with ``--quick`` at build time."""


def quick(gallery_conf, script_vars):
    """Command-line arguments of each example when the gallery executes it (its quick settings)."""
    return ["--quick"]
