console.log("route_pack extension");
