"""Agents for `openpi_client.runtime`: the policy-backed one robot clients use."""
