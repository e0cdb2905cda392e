"""The `smash` commands, one module per group; `smash_tui.cli` registers them."""
