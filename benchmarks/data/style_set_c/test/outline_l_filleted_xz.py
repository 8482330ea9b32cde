import cadquery as cq
bracket = (cq.Workplane("XZ")
           .moveTo(0, 0).lineTo(60, 0).lineTo(60, 8).lineTo(8, 8).lineTo(8, 50).lineTo(0, 50).close()
           .extrude(-30)
           .edges("|Y").edges(cq.selectors.NearestToPointSelector((8, 15, 8))).fillet(5))
