import cadquery as cq

result = cq.Workplane("ZX").sketch().circle(40).finalize().extrude(15)
