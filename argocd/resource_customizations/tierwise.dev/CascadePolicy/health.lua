-- Health of a Tierwise object (ModelTier, CacheProfile, CascadePolicy) from its status,
-- which follows the Kubernetes API conventions: observedGeneration and conditions.
--
--   Progressing  the operator has not observed the current generation yet, or a condition
--                Progressing=True says a change is being rendered or evaluated (an eval
--                waiting for its dataset counts for 5 minutes; then the operator sets
--                Progressing=False and it is Degraded)
--   Degraded     Degraded/Stalled=True, or any other condition False: an unresolved
--                reference (ResolvedRefs), a rejected or inconclusive change (Promoted), an
--                invalid spec, unknown price or no promoted config live (Ready)
--   Suspended    a CascadePolicy's rollout paused on purpose (status.rollout.phase Paused,
--                the tierwise.dev/rollout: paused annotation) and nothing else wrong
--   Healthy      Ready=True and nothing above (a spend budget degrading or refusing is
--                named in the message: the policy works as configured)
-- The message is the deciding condition's "Type: reason: message".
local hs = {}

local function describe(c)
  local text = c.type
  if c.reason ~= nil and c.reason ~= "" then
    text = text .. ": " .. c.reason
  end
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Tierwise operator to reconcile"
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the Tierwise operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = obj.status.conditions or {}
local byType = {}
for _, c in ipairs(conditions) do
  if c.type ~= nil then
    byType[c.type] = c
  end
end

-- Abnormal-true conditions first: they say outright that something is wrong.
for _, name in ipairs({"Degraded", "Stalled"}) do
  local c = byType[name]
  if c ~= nil and c.status == "True" then
    hs.status = "Degraded"
    hs.message = describe(c)
    return hs
  end
end

-- A change in flight (rendering, an eval Job running) supersedes an earlier verdict.
local progressing = byType["Progressing"]
if progressing ~= nil and progressing.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(progressing)
  return hs
end

-- A deliberate pause holds the candidate back: not a failure of the candidate (Promoted) nor,
-- before a first config was promoted, of the policy (Ready: NoLiveConfig).
local rollout = obj.status.rollout or {}
local paused = rollout.phase == "Paused"
local function excused(c)
  return paused and (c.type == "Promoted" or (c.type == "Ready" and c.reason == "NoLiveConfig"))
end

-- Positive-polarity conditions: False is a problem. The most specific cause wins over
-- Ready, which usually repeats it.
local ordered = {"ResolvedRefs", "Promoted"}
for _, c in ipairs(conditions) do
  if c.type ~= "Ready" and c.type ~= "ResolvedRefs" and c.type ~= "Promoted"
      and c.type ~= "Progressing" and c.type ~= "Degraded" and c.type ~= "Stalled" then
    table.insert(ordered, c.type)
  end
end
table.insert(ordered, "Ready")
for _, name in ipairs(ordered) do
  local c = byType[name]
  if c ~= nil and c.status == "False" and not excused(c) then
    hs.status = "Degraded"
    hs.message = describe(c)
    return hs
  end
end

if paused then
  hs.status = "Suspended"
  hs.message = "Rollout paused: " .. (rollout.message or "")
  return hs
end

-- A spend budget degrading or refusing requests is the policy working as configured, not a
-- broken policy: it stays Healthy and says so in the message.
local function budgets(text)
  for _, b in ipairs(obj.status.budgets or {}) do
    if b.action == "Degrade" or b.action == "Reject" then
      text = text .. "; budget " .. b.name .. ": " .. b.action .. " (" .. (b.percent or "?")
        .. " of " .. (b.limitUSD or "?") .. " USD)"
    end
  end
  return text
end

local ready = byType["Ready"]
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = budgets(describe(ready))
  return hs
end
if ready ~= nil then
  hs.status = "Progressing"
  hs.message = describe(ready)
  return hs
end
hs.status = "Progressing"
hs.message = "Waiting for the Ready condition"
return hs
