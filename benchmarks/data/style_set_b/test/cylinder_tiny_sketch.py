import cadquery as cq

result = cq.Workplane("XY").sketch().circle(0.8).finalize().extrude(2.5)
