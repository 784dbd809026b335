package schemas

// Topic names. Every topic is keyed by the request id (UTF-8 bytes) with Kafka's murmur2 key
// partitioner and has the same partition count, so partition p of each topic holds the same keys.
const (
	TopicInference   = "understudy.inference.v1"
	TopicShadow      = "understudy.shadow.v1"
	TopicLabels      = "understudy.labels.v1"
	TopicComparisons = "understudy.comparisons.v1"
	TopicDeadLetter  = "understudy.deadletter.v1"
	// TopicJoinerState is the joiner's compacted changelog of pending joins (values are
	// Comparison records with status "pending" or "emitted"; a tombstone forgets a key).
	TopicJoinerState = "understudy.joiner-state.v1"
	// TopicJoinerLabels is the joiner's changelog of its long-lived label state (a time-retained
	// log, not compacted): final comparisons awaiting labels, labels awaiting predictions, and
	// match markers. Postgres holds the materialized state; this log is its source of truth.
	TopicJoinerLabels = "understudy.joiner-labels.v1"
)

// Topics lists every Understudy topic in a stable order.
var Topics = []string{TopicInference, TopicShadow, TopicLabels, TopicComparisons, TopicDeadLetter, TopicJoinerState, TopicJoinerLabels}

// Dead-letter convention: a record that a service cannot process is copied to TopicDeadLetter
// with its original key and value bytes untouched and these headers (values are UTF-8 text).
const (
	HeaderDLQReason          = "understudy.dlq.reason"           // short machine reason, e.g. "decode"
	HeaderDLQError           = "understudy.dlq.error"            // human-readable error, never payload contents
	HeaderDLQSourceTopic     = "understudy.dlq.source.topic"     // topic the record was read from
	HeaderDLQSourcePartition = "understudy.dlq.source.partition" // decimal partition
	HeaderDLQSourceOffset    = "understudy.dlq.source.offset"    // decimal offset
	HeaderDLQService         = "understudy.dlq.service"          // service that rejected it
	// HeaderDLQOriginalSize is present when the value was too large to copy whole: the copy
	// holds its first DeadLetterMaxValue bytes and this header the original size in bytes.
	HeaderDLQOriginalSize = "understudy.dlq.original-size"
)

// Dead-letter copies are bounded so that a record too large to forward can always be
// dead-lettered: values beyond DeadLetterMaxValue bytes are cut (HeaderDLQOriginalSize says
// so), keys beyond DeadLetterMaxKey are cut, source headers are dropped when they exceed
// DeadLetterMaxHeaders bytes in total, and the error text is cut at DeadLetterMaxError.
const (
	DeadLetterMaxValue   = 256 << 10
	DeadLetterMaxKey     = 1 << 10
	DeadLetterMaxHeaders = 16 << 10
	DeadLetterMaxError   = 1 << 10
)
