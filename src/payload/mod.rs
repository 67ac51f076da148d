//! Native notifications per platform, validated against each service's limits, and the shared
//! pieces (bodies, headers) the transports send for every device.
