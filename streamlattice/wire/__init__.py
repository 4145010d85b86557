"""Records on the wire: the Avro schemas, the codec, typed records and the clock that stamps them."""
