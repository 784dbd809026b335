// Package schemas owns Understudy's wire contract: the Avro schemas of the four event types,
// their typed Go values, the codec that frames them (Avro single-object encoding by default,
// Confluent wire format when a schema registry is used), the topic names and the dead-letter
// header convention. It holds no service logic and no Kafka client code.
//
// Golden vectors in testdata/golden pin the bytes so that producers written in other languages
// can prove byte compatibility; testdata/compat keeps every earlier schema version, and a test
// checks that each current schema can read data written with all of them.
package schemas
