"""The project's Hydra sweeper plugin, ``hydra/sweeper=grid`` (the default sweeper of ``conf/config.yaml``)."""
