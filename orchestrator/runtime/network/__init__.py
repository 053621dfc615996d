"""Networks: bridges, addresses, service-name DNS, nftables NAT and published ports."""
