"""Small adapters over confluent-kafka, behind the ports the rest of Ferry depends on."""
