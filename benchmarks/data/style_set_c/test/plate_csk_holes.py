import cadquery as cq
plate = (cq.Workplane("XY").box(120, 80, 12)
         .faces(">Z").workplane().rect(90, 50, forConstruction=True).vertices()
         .cskHole(8, 16, 82))
