"""Tests of the worker and the `smash` command line."""
