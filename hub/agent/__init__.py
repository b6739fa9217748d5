"""The field agent: polls the devices of one gateway and publishes them per the MQTT contract."""
