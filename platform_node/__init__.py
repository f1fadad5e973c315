"""The platform node (融资信用服务平台): registries, fan-out to providers, combination.

It stores only what the annex lets it store (physically aggregated public data),
calls providers for everything else, and never holds non-public raw values.
"""
