"""Tests written once for every model family (the contract of `higgs_ds.models.ModelFamily`), and a third
family that exists only here."""
