// Package apiv1 is the JSON contract of Understudy's read API (/api/v1/ on the aggregator's
// ops address) and of its alert webhooks, as package schemas is the Avro contract of its
// topics. The aggregator serves these types; the CLI, the demo and receivers decode them; the
// dashboard reads the same JSON. A field may be added in version 1; renaming or removing one,
// or changing its meaning, is version 2.
//
//	GET /api/v1/experiments                               ExperimentsResponse
//	GET /api/v1/experiments/{experiment}/stats?from=&to=  StatsResponse
//	GET /api/v1/experiments/{experiment}/windows?from=&to=&shadow=&width=&min_labels=  SeriesResponse
//	GET /api/v1/experiments/{experiment}/distribution?from=&to=&shadow=&bins=          Distribution
//	GET /api/v1/alerts?experiment=&state=                 AlertsResponse
//	GET /api/v1/alerts/history?experiment=&from=&limit=   HistoryResponse
//
// from and to are RFC 3339 times or durations before now ("1h" is an hour ago); to defaults to
// now and from to an hour before to. Errors are ErrorResponse with status 400 for bad
// parameters, 401 for a missing or wrong bearer token and 500 for failures.
//
// Webhooks are Standard Webhooks (https://www.standardwebhooks.com) whose body is Payload;
// Verify checks one as a receiver should.
package apiv1
