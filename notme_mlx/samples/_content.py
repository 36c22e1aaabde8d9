"""Hand-written, fictional sample conversations of "Alex Rivera" (the bundled sample owner).

Everyone and everything here is invented by the notme-mlx authors. AI turns
deliberately contain validation-seeking filler ("Great question!", "Does that make
sense?", "Should I go ahead?") and some of Alex's texts do too, so the detector
and the penalty have something to learn from. `_build.py` renders these into
every supported export format.
"""

OWNER = "Alex Rivera"

# AI chats: (title, [(who, text)]) with who "me" (Alex) or "ai".
AI_CHATS = [
    ("Sourdough starter rescue", [
        ("me", "My sourdough starter smells like nail polish remover. Is it dead?"),
        ("ai", "Great question! It's almost certainly not dead. That acetone smell means the yeast is hungry.\n\nFeed it twice a day at a 1:1:1 ratio (starter, flour, water) for three days and keep it somewhere warm. Does that make sense?"),
        ("me", "Yes. What temperature counts as warm?"),
        ("ai", "Around 24-26 °C is ideal. The top of the fridge or an oven with only the light on both work. I hope this helps!"),
    ]),
    ("Bike commute gear", [
        ("me", "I'm starting to bike to work, 9 km each way, lots of rain. What do I actually need?"),
        ("ai", "Fenders, a proper rain jacket, front and rear lights, and a pannier instead of a backpack so your back stays dry. Would you like me to put together a shopping list with price ranges?"),
        ("me", "No list needed. Fenders first, got it."),
    ]),
    ("Explain list comprehensions", [
        ("me", "Explain Python list comprehensions like I already know for loops."),
        ("ai", "A list comprehension is a for loop that builds a list in one expression:\n\n    squares = [x * x for x in range(10) if x % 2 == 0]\n\nis the same as appending x * x inside a loop with an if. Does that make sense? Let me know if you'd like more examples!"),
        ("me", "Makes sense. And dict comprehensions are the same with key: value?"),
        ("ai", "Exactly right! {k: v for k, v in pairs} builds a dict the same way. You're absolutely right to connect the two."),
    ]),
    ("Garden irrigation timer", [
        ("me", "I want a drip irrigation timer for 6 raised beds. One zone or two?"),
        ("ai", "Two zones if the beds get different sun: the sunny ones need roughly 30% more water. With one zone you'd overwater the shady beds.\n\nShould I go ahead and sketch a layout for two zones?"),
        ("me", "Sketch it."),
        ("ai", "Zone 1: beds 1-3 (south side), 25 minutes at 6:00.\nZone 2: beds 4-6 (north side), 18 minutes at 6:30.\nRun a 1/2\" mainline along the fence and 1/4\" drip lines per bed. I hope that works for you!"),
    ]),
    ("Lisbon in four days", [
        ("me", "Four days in Lisbon in October. I like walking, hate queues. Rough plan?"),
        ("ai", "What a wonderful trip! Day 1 Alfama and the castle early before the crowds, Day 2 Belém (book the monastery online to skip the queue), Day 3 a day trip to Sintra on the first train, Day 4 LX Factory and the riverside walk to Cais do Sodré. Does this sound like what you had in mind?"),
        ("me", "Swap Sintra to day 2, the forecast says rain on day 3."),
        ("ai", "Good call! Day 2 Sintra, Day 3 Belém, which has more indoor options. Let me know if you'd like restaurant ideas too!"),
    ]),
    ("Cover letter opening", [
        ("me", "Rewrite this opening to sound less desperate: 'I would be so grateful for the chance to maybe interview for this role if you think I could be a fit.'"),
        ("ai", "Here's a more confident version:\n\n'I design stormwater systems that hold up in real storms, and I'd like to do that for Calder Water.'\n\nI hope this is closer to what you wanted. Would you like me to try a few more variations?"),
        ("me", "That's the one. Thanks."),
    ]),
    ("Spanish past tenses", [
        ("me", "When do I use preterite vs imperfect in Spanish?"),
        ("ai", "Preterite for completed, bounded events: 'Comí a las dos.' Imperfect for background, habits and ongoing states: 'Comía cuando llamaste.' A quick test: if you can add 'once' it's preterite; if you can add 'used to' or 'was ...ing' it's imperfect. Does that help clarify things?"),
        ("me", "Yes. 'Cuando era niño, vivía en Port Calder' is imperfect twice then."),
        ("ai", "Perfect, exactly right! Great job."),
    ]),
    ("Board game for six", [
        ("me", "Board game for six adults, under an hour, not a party game."),
        ("ai", "Try 'Lantern Harbor' style worker-placement fillers or a cooperative deduction game. If you want a classic, 7 Wonders plays six in about 35 minutes. Is that the kind of game you're looking for?"),
    ]),
    ("Budget spreadsheet formula", [
        ("me", "Spreadsheet: column B has amounts, column C has categories. I want the total for 'groceries'."),
        ("ai", "Use =SUMIF(C:C, \"groceries\", B:B). If the category might have different capitalisation, SUMIF is already case-insensitive. Does that work for your sheet?"),
        ("me", "Works. Now per month, dates are in column A."),
        ("ai", "=SUMIFS(B:B, C:C, \"groceries\", A:A, \">=\"&DATE(2024,3,1), A:A, \"<\"&DATE(2024,4,1)) gives March. Happy to help further if needed!"),
    ]),
    ("Fix a leaking tap", [
        ("me", "Kitchen tap drips from the spout even when closed hard. Single lever mixer."),
        ("ai", "On a single-lever mixer that's almost always the ceramic cartridge. Turn off the water under the sink, pop the cap on the lever, undo the screw, lift the lever, unscrew the retaining nut and take the cartridge to a hardware shop to match it. Would it help if I walked you through it step by step?"),
        ("me", "I'll manage. What size wrench usually?"),
        ("ai", "Usually 22 or 24 mm, but an adjustable wrench is safest. Sorry if that's not as precise as you hoped!"),
    ]),
    ("Git undo last commit", [
        ("me", "Undo my last git commit but keep the changes staged."),
        ("ai", "git reset --soft HEAD~1\n\nThat moves the branch back one commit and leaves your changes staged. I hope this helps! Let me know if you have any other questions."),
    ]),
    ("Running plan 10k", [
        ("me", "I run 5k in 31 minutes. Plan for a 10k in 8 weeks, 3 runs a week."),
        ("ai", "Week 1-2: two easy 4-5 km runs plus one long run of 6 km.\nWeek 3-5: add 1 km to the long run each week, keep one run with 4x3 min faster.\nWeek 6-7: long run 9-10 km.\nWeek 8: taper, two short runs, race on the weekend.\nDoes this plan seem manageable for you?"),
        ("me", "Manageable. Is walking during the long runs cheating?"),
        ("ai", "Not at all! Walk breaks are a legitimate strategy. You're doing great, honestly."),
    ]),
    ("Email to landlord about mould", [
        ("me", "Draft a short, firm email to my landlord: mould in the bathroom ceiling, third time I'm reporting it."),
        ("ai", "Subject: Bathroom mould, third report\n\nHi Mr. Hale,\n\nThe mould on the bathroom ceiling is back. I reported it on 12 February and 3 March. Please arrange a repair of the ventilation within 14 days and confirm the date in writing.\n\nBest,\nAlex Rivera\n\nWould you like me to make it more formal, or is this tone okay?"),
        ("me", "Tone is right. Sending it."),
    ]),
    ("What is a rain garden", [
        ("me", "One paragraph on rain gardens for a neighbourhood newsletter."),
        ("ai", "A rain garden is a shallow planted dip that catches water running off roofs and driveways and lets it soak slowly into the ground instead of rushing into storm drains. Native plants with deep roots do the work, the garden is dry most of the time, and a single one can absorb thousands of litres a year. I hope this captures what you were looking for!"),
    ]),
    ("Tomato leaves turning yellow", [
        ("me", "Lower tomato leaves yellowing, upper ones fine. Worry?"),
        ("ai", "Not much. Lower leaves yellowing is usually either normal ageing or a nitrogen shortage. Pull the yellow ones, water at the base, and add a balanced feed. If yellow spreads upward with brown spots, that's early blight. Does that answer your question?"),
        ("me", "Only the bottom ones. Feeding this weekend."),
    ]),
    ("Regex for dates", [
        ("me", "Regex to match dates like 2024-03-15 but not 2024-3-15."),
        ("ai", "\\b\\d{4}-\\d{2}-\\d{2}\\b\n\nThe {2} forces two-digit month and day. Is that what you need, or should it also validate month ranges?"),
        ("me", "That's enough."),
    ]),
]

# Claude Code sessions: (project dir, [(who, text)]) who "me" or "ai"; "tool" lines are tool traffic.
CODE_SESSIONS = [
    ("garden-sensors", [
        ("me", "The moisture logger crashes when the sensor returns None. Fix it."),
        ("ai", "I'll look at the logger first."),
        ("tool", "Read logger.py"),
        ("ai", "The crash is in `average()`: it sums readings without filtering None. I changed it to skip missing readings and return None when all are missing. Should I also add a test for this?"),
        ("me", "Yes, add the test."),
        ("tool", "Edit tests/test_logger.py"),
        ("ai", "Added `test_average_skips_missing`. All 12 tests pass. Let me know if you'd like me to make any other changes!"),
    ]),
    ("budget-cli", [
        ("me", "Add a --month flag to the report command, format YYYY-MM."),
        ("ai", "Done: `report --month 2024-03` filters transactions to that month and rejects anything not matching YYYY-MM with a clear error. I hope this is what you were looking for. Would you like me to update the README too?"),
        ("me", "Update the README, one line."),
        ("ai", "README updated with one usage line under Commands."),
    ]),
    ("rain-garden-calc", [
        ("me", "Sizing function: roof area m², rainfall mm, soil infiltration mm/h -> garden area. Keep it simple, does that make sense?"),
        ("ai", "Makes sense. `garden_area(roof_m2, rain_mm, infil_mm_h, depth_mm=150)` returns roof_m2 * rain_mm / (depth_mm + infil_mm_h * 24) in m², i.e. storage depth plus one day of infiltration. Is that the model you had in mind?"),
        ("me", "Yes. Use 24 h as a parameter, not a constant."),
        ("ai", "Changed: `drain_hours=24` is now a keyword argument."),
    ]),
]

# Person-to-person chats: (other person, [(who, text)]) with who "me" or "them".
P2P_CHATS = [
    ("Jordan Lee", [
        ("them", "Climbing Thursday?"),
        ("me", "Yes! 7pm at Boulder Barn?"),
        ("them", "7:30, I'm stuck at work till 7"),
        ("me", "7:30 works. Sorry if I'm being pushy about the time, is that ok?"),
        ("them", "Haha it's fine"),
        ("me", "Bringing the new chalk bag. Wait till you see it"),
        ("them", "You and your gear"),
        ("me", "It has a brush holder, Jordan.\nA BRUSH HOLDER."),
    ]),
    ("Sam Okafor", [
        ("them", "Did you finish the stormwater report?"),
        ("me", "Draft is done. Sending it tonight, just want to fix the culvert table"),
        ("them", "Great. Can you add the 50-year storm numbers too?"),
        ("me", "Already in appendix B"),
        ("them", "Perfect"),
        ("me", "I think maybe the summary is too long? Not sure, let me know if that works for you"),
        ("them", "Send it, I'll tell you"),
    ]),
    ("Priya Nair", [
        ("them", "Book club pick for next month??"),
        ("me", "Something short. We all failed the last one"),
        ("them", "Lol fair. Novella?"),
        ("me", "The Weir Keeper. 140 pages, set on a river, no excuses"),
        ("them", "Sold"),
        ("me", "I'll post it in the group"),
    ]),
    ("Mom", [
        ("them", "Are you coming Sunday? Dad is making paella"),
        ("me", "Yes, 1pm. I'll bring dessert"),
        ("them", "Not the lemon thing again"),
        ("me", "The lemon thing is a tart and everyone loved it"),
        ("them", "Your brother didn't"),
        ("me", "Theo doesn't count, he puts ketchup on eggs"),
        ("them", "True. See you Sunday ❤️"),
    ]),
    ("Theo Rivera", [
        ("them", "can you help me move the couch saturday"),
        ("me", "What time"),
        ("them", "10?"),
        ("me", "10 is fine. You're buying lunch"),
        ("them", "deal"),
        ("me", "And you're carrying the heavy end. Does that sound fair? Just checking"),
        ("them", "no"),
    ]),
    ("Jordan Lee", [
        ("them", "Lisbon recs? Going in May"),
        ("me", "Go to Sintra on the first train. Everything after 10am is a queue"),
        ("me", "And eat at the tiny place behind the fish market in Cais do Sodré. No menu, just point"),
        ("them", "Noted. Anything to skip?"),
        ("me", "The tram 28 line. Walk it instead, same views, no crush"),
    ]),
    ("Sam Okafor", [
        ("them", "Site visit moved to Wednesday"),
        ("me", "Ok. I'll bring the infiltration test kit"),
        ("them", "And boots. Last time you wore sneakers"),
        ("me", "One time!"),
    ]),
    ("Priya Nair", [
        ("me", "Finished The Weir Keeper. The last chapter wrecked me"),
        ("them", "RIGHT?? the lock scene"),
        ("me", "I had to put it down and walk around the block"),
        ("them", "Bring that energy to book club"),
        ("me", "I'll bring snacks and feelings"),
    ]),
]

# Extra hand-written conversations for the Markdown format (title, [(speaker, text)]).
MD_CHATS = [
    ("Notes to self: how I give feedback", [
        ("me", "Say what works first, then the one thing to change, then stop. No essay."),
    ]),
    ("Answer to a neighbour about the rain garden", [
        ("Ines Marlowe", "Will the rain garden attract mosquitoes?"),
        ("me", "No. It drains within a day, and mosquitoes need about a week of standing water to breed."),
        ("Ines Marlowe", "Oh good. Can I copy the plant list?"),
        ("me", "Yes. Swamp milkweed, blue flag iris, switchgrass. I'll drop a printed copy in your mailbox."),
    ]),
    ("How I'd explain my job", [
        ("ai", "How would you describe what you do to a ten-year-old?"),
        ("me", "When it rains, water has to go somewhere. I design the places it goes, so streets don't flood and rivers stay clean."),
    ]),
    ("Reply to a recruiter", [
        ("Dana Wick", "Would you be open to a quick chat about a senior role?"),
        ("me", "Yes, if it's hands-on design work and not mostly management. Tuesday or Thursday afternoon works."),
        ("Dana Wick", "It's about 70% design."),
        ("me", "Then Thursday at 3. Send the job description beforehand."),
    ]),
    ("Planning the allotment", [
        ("me", "Beds 1-3 tomatoes and beans, 4 squash, 5-6 greens and herbs.\nCompost goes next to bed 6 so the hose reaches it."),
        ("ai", "That layout works. Do you want to rotate the squash bed next year?"),
        ("me", "Yes, squash moves to bed 1, tomatoes to 4."),
    ]),
]

AI_CHATS += [
    ("Knife sharpening angle", [
        ("me", "What angle for sharpening a Japanese chef's knife on a whetstone?"),
        ("ai", "About 15 degrees per side. Two stacked coins under the spine is a decent guide when you start. Would you like tips on which grit to use?"),
        ("me", "1000 then 6000, I already have those."),
        ("ai", "That's a great combination! You clearly know what you're doing."),
    ]),
    ("SQL join question", [
        ("me", "Difference between LEFT JOIN and INNER JOIN in one sentence each."),
        ("ai", "INNER JOIN keeps only rows with a match in both tables. LEFT JOIN keeps every row of the left table and fills missing right-side columns with NULL. Does that make sense?"),
    ]),
    ("Houseplant light", [
        ("me", "North-facing window. Which plants survive?"),
        ("ai", "Pothos, ZZ plant, snake plant, cast iron plant and most ferns handle low light well. I hope this helps you pick!"),
        ("me", "ZZ it is."),
    ]),
    ("Meeting summary", [
        ("me", "Summarise: we agreed to delay the culvert replacement to autumn, Sam owns the permit, budget unchanged."),
        ("ai", "Decisions: culvert replacement moves to autumn; budget unchanged.\nOwner: Sam (permit).\nIs there anything else you'd like me to add?"),
    ]),
    ("Stretching after climbing", [
        ("me", "Forearms are wrecked after climbing. Three stretches."),
        ("ai", "1. Wrist flexor stretch: arm straight, palm up, pull fingers back gently for 30 s.\n2. Wrist extensor stretch: palm down, same idea.\n3. Prayer stretch: palms together at chest, lower the hands until you feel it.\nI'm not a doctor, so please check with a physio if it hurts. Does that work for you?"),
        ("me", "Doing them now."),
    ]),
    ("Word for a feeling", [
        ("me", "Is there a word for the relief when rain finally starts after a humid day?"),
        ("ai", "Petrichor is the smell of rain on dry earth; there isn't a common English word for the relief itself. I really hope that's useful, and I'm sorry I can't give you a perfect match!"),
        ("me", "Petrichor is close enough."),
    ]),
    ("Convert recipe to grams", [
        ("me", "2 cups flour, 1 cup sugar, 1/2 cup butter in grams."),
        ("ai", "Flour about 250 g, sugar about 200 g, butter about 113 g. Would you like me to convert the rest of the recipe too?"),
        ("me", "That's all of it."),
    ]),
    ("Should I learn Rust", [
        ("me", "I write Python for data work. Is Rust worth learning this year? Honest answer."),
        ("ai", "Honestly, probably not for your day job: your bottlenecks are more likely pandas and I/O than raw speed. Learn it if you enjoy it or want to write fast command-line tools. Does that seem reasonable?"),
        ("me", "Reasonable. Skipping it."),
    ]),
]

P2P_CHATS += [
    ("Climbing crew", [
        ("Jordan Lee", "New routes set at the Barn this week"),
        ("Priya Nair", "I'm in for Saturday morning"),
        ("me", "Saturday 9? I can drive, 3 seats free"),
        ("Jordan Lee", "9 is brutal but ok"),
        ("Priya Nair", "Pick me up at the bakery corner"),
        ("me", "Bakery corner 8:40. Is that ok for everyone? Sorry, I know it's early"),
        ("Jordan Lee", "Stop apologising and bring coffee"),
        ("me", "Fine. Coffee for three"),
    ]),
    ("Sam Okafor", [
        ("them", "Permit came through!"),
        ("me", "Finally. Start date?"),
        ("them", "Sept 9"),
        ("me", "Booking the excavator today"),
        ("them", "Budget still 48k?"),
        ("me", "48k, plus 10% contingency we agreed on"),
    ]),
    ("Theo Rivera", [
        ("them", "what's the wifi password at mom's"),
        ("me", "It's on the fridge, under the magnet shaped like a lemon"),
        ("them", "found it. why is it a lemon"),
        ("me", "Ask Dad. I've been asking for years"),
    ]),
    ("Priya Nair", [
        ("them", "Can you look at my CV before Friday?"),
        ("me", "Send it. I'll mark it up tomorrow evening"),
        ("them", "Thank you thank you"),
        ("me", "Done. Cut the summary to two lines and lead with the bridge project, it's your strongest"),
        ("them", "Doing that now"),
        ("me", "Hope that's helpful, I might be wrong about the order though"),
    ]),
]

AI_CHATS += [
    ("Pitch for the bioswale budget", [
        ("me", "Three sentences to convince the council to fund a bioswale on Harbor Street."),
        ("ai", "Harbor Street floods four times a year and every flood costs the city cleanup money. A bioswale soaks up the runoff before it reaches the drains, for less than two years of those cleanup bills. It also cools the street and looks better than a gutter. I hope this is persuasive enough! Would you like me to add numbers?"),
        ("me", "Add one number: 2023 cleanup cost was 61k."),
        ("ai", "Harbor Street floods four times a year; cleanup alone cost the city 61,000 in 2023. A bioswale soaks up that runoff before it reaches the drains, for less than two years of those bills. It also cools the street and looks better than a gutter."),
    ]),
    ("Why is my bread dense", [
        ("me", "Loaf came out dense and gummy in the middle. Starter was bubbly."),
        ("ai", "Most likely underproofed or cut too early. Let the bulk ferment go until the dough has grown about 50% and feels airy, and wait at least an hour after baking before slicing. Does that sound like it could be the issue?"),
        ("me", "I cut it after 10 minutes. That's it."),
    ]),
    ("Kids' questions about rain", [
        ("me", "My niece asked where rain comes from. Answer for a six-year-old, two sentences."),
        ("ai", "The sun warms up water in lakes and oceans until it floats up into the sky as tiny invisible drops. Up high it gets cold, the drops stick together into clouds, and when they get too heavy they fall back down as rain! I hope she likes it!"),
    ]),
    ("Pandas groupby", [
        ("me", "pandas: mean rainfall per month from a daily dataframe with a 'date' column."),
        ("ai", "df.groupby(pd.to_datetime(df['date']).dt.to_period('M'))['rainfall'].mean()\n\nThat groups by calendar month. Would you like me to explain how to_period works?"),
        ("me", "No, that's fine."),
        ("ai", "Sounds good! Let me know if you run into anything else."),
    ]),
    ("Saying no to a project", [
        ("me", "Help me say no to leading the intranet redesign. I'm at capacity with the Harbor Street project."),
        ("ai", "Here's a draft:\n\n'Thanks for thinking of me. I'm going to pass on leading the intranet redesign: Harbor Street needs my full attention until it ships in June. Happy to review the plan once it exists.'\n\nIs this the tone you want, or should I soften it?"),
        ("me", "Don't soften it. Sending as is."),
    ]),
    ("Soil infiltration test", [
        ("me", "How do I do a simple infiltration test in a backyard?"),
        ("ai", "Dig a hole about 30 cm deep and 15 cm wide, fill it with water and let it drain once to saturate the soil. Fill it again, measure the depth with a ruler, and check every 15 minutes for an hour. The drop per hour is your infiltration rate. Does that make sense? I can also explain what the numbers mean if that would help!"),
        ("me", "I know what they mean. 25 mm/h is fine for a rain garden?"),
        ("ai", "Yes, 25 mm/h is comfortably above the usual 13 mm/h minimum."),
    ]),
]

P2P_CHATS += [
    ("Jordan Lee", [
        ("me", "Found your headlamp in my car"),
        ("them", "I've been looking everywhere for that"),
        ("me", "Dropping it off tomorrow on my way to the site"),
        ("them", "Legend"),
    ]),
    ("Mom", [
        ("them", "Did you get the photos from Sunday?"),
        ("me", "Yes! The one of Dad with the paella pan is going on the fridge"),
        ("them", "He says he wants a copy too"),
        ("me", "Printing two. Maybe that's too many? Let me know if that's ok"),
        ("them", "Print three, your aunt will ask"),
    ]),
    ("Sam Okafor", [
        ("them", "Council meeting moved to the 14th"),
        ("me", "Good, more time for the cost table"),
        ("them", "Can you present the bioswale part?"),
        ("me", "Yes. Ten minutes, three slides, one number"),
        ("them", "Which number"),
        ("me", "61k. What flooding cost us last year"),
    ]),
    ("Priya Nair", [
        ("them", "I got the job!!!"),
        ("me", "PRIYA. The bridge project did it"),
        ("them", "They literally asked about it first"),
        ("me", "Celebration dinner on me. Friday?"),
        ("them", "Friday. You're the best"),
    ]),
]

MD_CHATS += [
    ("Texting a contractor about the fence", [
        ("Rui Castelo", "We can start the fence Monday but the posts will be 10 cm shorter than planned."),
        ("me", "Not fine. The drawing says 180 cm above ground; that's the height the permit is for."),
        ("Rui Castelo", "The supplier is out of the long posts."),
        ("me", "Then start when they're back. I'd rather wait a week than redo it."),
        ("Rui Castelo", "Understood. I'll call when they arrive."),
        ("me", "Thanks. Text me the delivery date when you have it."),
    ]),
    ("Advice I gave Theo about his first job", [
        ("Theo Rivera", "first week at the new job. everyone's so fast"),
        ("me", "They've been there for years. Write down every question, ask them in one batch each afternoon."),
        ("Theo Rivera", "won't that look like I don't know anything"),
        ("me", "You don't know anything yet. That's what week one is for. Nobody expects more."),
        ("Theo Rivera", "ok that actually helps"),
    ]),
    ("Asking an assistant to check my math", [
        ("me", "Roof 85 m², 40 mm storm, garden depth 150 mm, infiltration 20 mm/h over 24 h. Garden area?"),
        ("ai", "85 × 40 / (150 + 20 × 24) = 3400 / 630 ≈ 5.4 m². Great question! Would you like me to double-check with a different storm?"),
        ("me", "No. 5.4 m² matches mine."),
    ]),
    ("Weekend plan with Jordan", [
        ("Jordan Lee", "Saturday: crag or gym?"),
        ("me", "Crag if it's dry. Forecast says dry until 3."),
        ("Jordan Lee", "Leave at 7 then"),
        ("me", "7:15. I need coffee to function, that's non-negotiable."),
        ("Jordan Lee", "7:15 it is"),
    ]),
]
