//! The data node (`mishards node --role rw|ro`): a Milvus 1.1-compatible write or read node on shared
//! storage. Built by the data-node issue; the gateway never imports this module.
