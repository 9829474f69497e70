//! The gateway (`mishards gateway`): the actix actor system that discovers nodes, polls metadata, routes
//! segment files and scatters/gathers searches (see actors.md). Built by the gateway issue; it reaches nodes
//! only through the public Milvus 1.1 API and never imports `node`.
